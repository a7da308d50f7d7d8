-- wrk script: POST AdmissionReviews over keep-alive, check every answer, report JSON.
--
-- env BENCH_BODY: the request body, with the markers @UID@, @TIME@ and optionally @NAME@
-- where each request gets a fresh value, as a real API server's requests do: every
-- request its own uid and managedFields time (pods created in different seconds); with
-- @NAME@, every pod its own name too (distinct pods, not replicas).
-- env BENCH_ECHO: "1" when the server must answer each request with that request's uid
-- (the injector); otherwise every answer must carry BENCH_UID (the floor, whose answer
-- is fixed).
local body_file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local template = body_file:read("*a")
body_file:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept-Encoding"] = "gzip"
wrk.path = "/mutate?timeout=5s"

-- The body as literal pieces and markers, split once.
local pieces = {}
local at = 1
while true do
  local s, e, marker = template:find("@(%u+)@", at)
  if not s then
    table.insert(pieces, template:sub(at))
    break
  end
  table.insert(pieces, template:sub(at, s - 1))
  table.insert(pieces, marker)
  at = e + 1
end

local echo = os.getenv("BENCH_ECHO") == "1"
local fixed_uid = os.getenv("BENCH_UID")
local threads = {}
local counter = 0
local pending = {}
bad = 0
id = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function request()
  counter = counter + 1
  local uid = string.format("%08x-0000-4000-8000-%012x", id, counter)
  local name = string.format("server-mesher-%d-%d", id, counter)
  local s = id * 1000000 + counter  -- a distinct second per request (LuaJIT: no //)
  local time = string.format("2026-%02d-%02dT%02d:%02d:%02dZ",
    1 + math.floor(s / 2419200) % 12, 1 + math.floor(s / 86400) % 28,
    math.floor(s / 3600) % 24, math.floor(s / 60) % 60, s % 60)
  local parts = {}
  for i, piece in ipairs(pieces) do
    if i % 2 == 1 then
      parts[i] = piece
    elseif piece == "UID" then
      parts[i] = uid
    elseif piece == "TIME" then
      parts[i] = time
    else
      parts[i] = name
    end
  end
  pending[uid] = true
  return wrk.format(nil, nil, nil, table.concat(parts))
end

function response(status, headers, body)
  local uid = body:match('"uid":"([^"]+)"')
  local ok = status == 200 and uid ~= nil and body:find("AdmissionReview", 1, true)
    and body:find("JSONPatch", 1, true)
  if ok and echo then
    ok = pending[uid]
    pending[uid] = nil
  elseif ok then
    ok = uid == fixed_uid
  end
  if not ok then
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
