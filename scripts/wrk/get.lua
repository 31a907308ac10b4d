-- get.lua: wrk script for scripts/speed.sh. Each request GETs a key drawn at
-- random from the keys scripts/wrk/load.lua wrote (k00000000 ..), so a read
-- of quorumkv hits an existing 1 KiB JSON document.
--
--   WRK_KEYS=10000 WRK_QUERY='r=2' wrk -t2 -c64 -d10s --latency -s scripts/wrk/get.lua http://HOST:PORT
--
-- WRK_KEYS: how many keys exist (default 10000); WRK_QUERY: the query
-- string, without '?' (default none); WRK_BUCKET: the bucket (default bench).
-- The reference servers of scripts/refserver get the very same requests.

local keys = tonumber(os.getenv("WRK_KEYS") or "10000")
local query = os.getenv("WRK_QUERY") or ""
local bucket = os.getenv("WRK_BUCKET") or "bench"
local suffix = query ~= "" and ("?" .. query) or ""

local threads = 0
function setup(thread)
	threads = threads + 1
	thread:set("id", threads)
end

function init(args)
	math.randomseed((id or 1) * 7919 + os.time())
end

function request()
	local k = math.random(0, keys - 1)
	return wrk.format("GET", string.format("/v1/kv/%s/k%08d%s", bucket, k, suffix))
end
