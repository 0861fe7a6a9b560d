-- wrk script: POSTs pre-generated signed bodies (file $BENCH_BODIES, "sig<TAB>body" lines).
-- Thread t of T takes lines t, t+T, t+2T, ... so threads never send each other's bodies
-- (unless the file itself repeats them, as with --dups).
-- Each thread reads its next line from the file as it goes (buffered, from the page cache).
-- Not parsed in init: wrk initialises thread 1 while thread 0 already sends, and parsing
-- 600,000 lines took ~2.4 s per thread, so the first seconds of every run were measured with
-- a CPU busy in wrk's Lua (nginx came out 51-53k req/s at 64 connections that way, 62-64k
-- without it).
local counter = 0
local threads = {}

function setup(thread)
	thread:set("tid", counter)
	counter = counter + 1
	table.insert(threads, thread)
end

-- back to this thread's first line
local function rewind()
	bodies:seek("set")
	for _ = 1, tid do
		bodies:read("*l")
	end
end

function init(args)
	nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")
	bodies = assert(io.open(os.getenv("BENCH_BODIES"), "rb"))
	assert(bodies:read("*l") ~= nil, "BENCH_BODIES is empty")
	rewind()
	wrapped = 0
end

function request()
	local line = bodies:read("*l")
	if line == nil then
		rewind()
		wrapped = wrapped + 1
		line = bodies:read("*l")
	end
	for _ = 2, nthreads do
		bodies:read("*l") -- the other threads' lines
	end
	local tab = line:find("\t", 1, true)
	return wrk.format("POST", nil, {["Content-Type"] = "application/json",
		["X-Callback-Api-Key"] = line:sub(1, tab - 1)}, line:sub(tab + 1))
end

function done(summary, latency, requests)
	local wraps = 0
	for _, t in ipairs(threads) do wraps = wraps + (t:get("wrapped") or 0) end
	local sockerr = summary.errors.connect + summary.errors.read + summary.errors.write +
		summary.errors.timeout
	io.write(string.format("RESULT requests=%d non2xx=%d sockerr=%d p50_ms=%.2f p99_ms=%.2f wrapped=%d\n",
		summary.requests, summary.errors.status, sockerr, latency:percentile(50) / 1000,
		latency:percentile(99) / 1000, wraps))
end
