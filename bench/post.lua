-- wrk script: POSTs pre-generated signed bodies (file $BENCH_BODIES, "sig<TAB>body" lines).
-- Thread t of T takes lines t, t+T, t+2T, ... so threads never send each other's bodies
-- (unless the file itself repeats them, as with --dups).
local counter = 0
local threads = {}

function setup(thread)
	thread:set("tid", counter)
	counter = counter + 1
	table.insert(threads, thread)
end

function init(args)
	local nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")
	local path = os.getenv("BENCH_BODIES")
	sigs, bodies, idx = {}, {}, 0
	local n = 0
	for line in io.lines(path) do
		if n % nthreads == tid then
			local tab = line:find("\t", 1, true)
			table.insert(sigs, line:sub(1, tab - 1))
			table.insert(bodies, line:sub(tab + 1))
		end
		n = n + 1
	end
	wrapped = 0
end

function request()
	idx = idx + 1
	if idx > #bodies then
		idx = 1
		wrapped = wrapped + 1
	end
	return wrk.format("POST", nil, {["Content-Type"] = "application/json",
		["X-Callback-Api-Key"] = sigs[idx]}, bodies[idx])
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
