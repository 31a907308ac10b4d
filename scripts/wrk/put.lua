-- put.lua: wrk script for scripts/speed.sh. Each request PUTs a 1 KiB JSON
-- document (Content-Type: application/json) under a key drawn at random
-- from k00000000 .. k(WRK_KEYS-1), so writes spread over the keyspace and
-- overwrite what scripts/wrk/load.lua wrote.
--
--   WRK_KEYS=10000 WRK_QUERY='w=2' wrk -t2 -c64 -d10s --latency -s scripts/wrk/put.lua http://HOST:PORT
--
-- WRK_KEYS: size of the keyspace (default 10000); WRK_QUERY: the query
-- string, without '?' (default none); WRK_BUCKET: the bucket (default bench).

local keys = tonumber(os.getenv("WRK_KEYS") or "10000")
local query = os.getenv("WRK_QUERY") or ""
local bucket = os.getenv("WRK_BUCKET") or "bench"
local suffix = query ~= "" and ("?" .. query) or ""
local headers = { ["Content-Type"] = "application/json" }
local pad = string.rep("x", 998) -- {"k":"k00000000","pad":"…"} is 1024 bytes

local threads = 0
function setup(thread)
	threads = threads + 1
	thread:set("id", threads)
end

function init(args)
	math.randomseed((id or 1) * 7919 + os.time())
end

function request()
	local key = string.format("k%08d", math.random(0, keys - 1))
	local body = '{"k":"' .. key .. '","pad":"' .. pad .. '"}'
	return wrk.format("PUT", "/v1/kv/" .. bucket .. "/" .. key .. suffix, headers, body)
end
