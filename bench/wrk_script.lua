-- wrk script for `make bench` (closed loop). bench/http_bench.py fills in the spec below:
-- METHOD, PATH, BODY (nil for none), HEADERS, IDS; `{id}` takes IDS in turn (each thread its
-- own stride, so ids are not reused while any is left), `{key}` a value unique per request.
-- done() prints one line "WRKJSON {...}" with the counts and latency percentiles (us).

METHOD = "__METHOD__"
PATH = "__PATH__"
BODY = __BODY__
HEADERS = __HEADERS__
IDS = __IDS__
TAG = "__TAG__"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  counter = 0
  nthreads = tonumber(args[1]) or 1
end

local function fill(template, id, key)
  if template == nil then return nil end
  local s = template:gsub("{id}", id)
  s = s:gsub("{key}", key)
  return s
end

function request()
  counter = counter + 1
  local n = (counter - 1) * nthreads + (tid - 1)
  local id = ""
  if #IDS > 0 then id = IDS[(n % #IDS) + 1] end
  local key = TAG .. "-" .. tid .. "-" .. counter
  local headers = {}
  for k, v in pairs(HEADERS) do headers[k] = fill(v, id, key) end
  return wrk.format(METHOD, fill(PATH, id, key), headers, fill(BODY, id, key))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"non_2xx": %d, "timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    latency.mean))
end
