-- load.lua: wrk script that writes WRK_KEYS keys k00000000 .. k(WRK_KEYS-1),
-- each once, as 1 KiB JSON documents (Content-Type: application/json), for
-- scripts/speed.sh and scripts/memory.sh; with WRK_METHOD=GET it reads each
-- of them once instead.
--
--   WRK_KEYS=10000 WRK_THREADS=2 WRK_DONE_DIR=/tmp/d \
--     wrk -t2 -c64 -d24h -s scripts/wrk/load.lua http://HOST:PORT
--
-- Thread t of WRK_THREADS (must equal wrk's -t) handles the keys t-1,
-- t-1+WRK_THREADS, ... in order. Once a thread has sent its share it sends
-- only GET /livez, and once every one of its requests was answered it
-- creates the file WRK_DONE_DIR/t<t> (with "<ok> <failed>" in it) and stops.
-- wrk itself only stops at -d or on SIGINT: the caller waits for
-- WRK_THREADS files, then sends wrk SIGINT. done() prints
-- "load: ok=<n> failed=<n>". A request that failed (an answer of 300 or
-- more, or lost with its connection) is not retried: the caller must check
-- the counts. A 2xx answer counts as a key only if it carries X-Context
-- (every quorumkv write or read does; /livez does not).
--
-- WRK_QUERY: query string without '?' (default none); WRK_BUCKET: bucket
-- (default bench); WRK_METHOD: PUT (default) or GET.

local keys = tonumber(os.getenv("WRK_KEYS") or "10000")
local nthreads = tonumber(os.getenv("WRK_THREADS") or "1")
local donedir = os.getenv("WRK_DONE_DIR") or "."
local query = os.getenv("WRK_QUERY") or ""
local bucket = os.getenv("WRK_BUCKET") or "bench"
local suffix = query ~= "" and ("?" .. query) or ""
local method = os.getenv("WRK_METHOD") or "PUT"
local headers = { ["Content-Type"] = "application/json" }
local pad = string.rep("x", 998) -- {"k":"k00000000","pad":"…"} is 1024 bytes

local threads = {}
function setup(thread)
	table.insert(threads, thread)
	thread:set("id", #threads)
end

local next_key, share, sent, first, finished, livez
ok, failed = 0, 0 -- globals, so that done() can read them with thread:get
function init(args)
	next_key = id - 1
	share = 0
	if id <= keys then share = math.floor((keys - id) / nthreads) + 1 end
	sent, ok, failed, first, finished = 0, 0, 0, true, false
	livez = wrk.format("GET", "/livez") -- here, not at load: wrk sets Host before init
	if share == 0 then finish() end
end

-- finish records this thread's counts in its done file and stops it.
function finish()
	if finished then return end
	finished = true
	local f = assert(io.open(donedir .. "/t" .. id, "w"))
	f:write(ok, " ", failed, "\n")
	f:close()
	wrk.thread:stop()
end

function request()
	-- wrk calls request() once before the run on its first thread to
	-- inspect it: the first call of every thread sends a harmless /livez
	-- so that no key is lost to that call.
	if first or sent >= share then
		first = false
		return livez
	end
	local key = string.format("k%08d", next_key)
	next_key = next_key + nthreads
	sent = sent + 1
	local path = "/v1/kv/" .. bucket .. "/" .. key .. suffix
	if method == "GET" then
		return wrk.format("GET", path)
	end
	local body = '{"k":"' .. key .. '","pad":"' .. pad .. '"}'
	return wrk.format("PUT", path, headers, body)
end

function response(status, headers, body)
	if status >= 300 then
		failed = failed + 1
	elseif headers["X-Context"] then
		ok = ok + 1
	else
		return -- /livez
	end
	if ok + failed >= share then finish() end
end

function done(summary, latency, requests)
	local o, f = 0, 0
	for _, t in ipairs(threads) do
		o = o + (tonumber(t:get("ok")) or 0)
		f = f + (tonumber(t:get("failed")) or 0)
	end
	io.write(string.format("load: ok=%d failed=%d\n", o, f))
end
