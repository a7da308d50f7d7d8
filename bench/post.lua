-- wrk script: POST one AdmissionReview over keep-alive, check every answer, report JSON.
-- env BENCH_BODY: the request body file; BENCH_UID: the uid every answer must echo.
local body_file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept-Encoding"] = "gzip"
wrk.path = "/mutate?timeout=5s"

local uid = os.getenv("BENCH_UID")
local threads = {}
bad = 0

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status ~= 200 or not body:find(uid, 1, true) or not body:find("AdmissionReview", 1, true)
    or not body:find("JSONPatch", 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local bad_total = 0
  for _, thread in ipairs(threads) do
    bad_total = bad_total + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":%d,"bad_answers":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    bad_total, latency:percentile(50), latency:percentile(99), latency.max))
end
