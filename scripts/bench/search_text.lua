-- wrk script for scripts/bench_serve.sh: POST /v1/search/text with JSON bodies
-- {"query": TEXT, "k": K, "target": "images"}, cycling through the query texts of a file (one a
-- line; the same file serve_bench's `stages` reads), each wrk thread from its own offset.
--   wrk -t2 -c8 -d20s --timeout 10s -s scripts/bench/search_text.lua URL -- QUERIES_FILE [K]
-- Any response that is not 2xx counts as a failure (wrk's own "Non-2xx or 3xx" line only
-- counts >= 400). done() prints two machine-readable lines:
--   RESULT requests=N duration_s=S rps=R mean_ms=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..
--   FAILURES total=N non2xx=N connect=N read=N write=N timeout=N statuses=CODE:COUNT,...
-- (total = non-2xx responses + socket errors).

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local function json_string(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

local requests = {}
local position = 0
non2xx = 0
statuses = ""
local by_status = {}

function init(args)
  local path = args[1] or "scripts/bench/queries.txt"
  local k = tonumber(args[2] or "10")
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(path) do
    if line ~= "" then
      local body = '{"query": ' .. json_string(line) .. ', "k": ' .. k .. ', "target": "images"}'
      table.insert(requests, wrk.format("POST", "/v1/search/text", headers, body))
    end
  end
  assert(#requests > 0, "no query texts in " .. path)
  position = (id * 7) % #requests
end

function request()
  position = position % #requests + 1
  return requests[position]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    by_status[status] = (by_status[status] or 0) + 1
    local parts = {}
    for code, n in pairs(by_status) do table.insert(parts, code .. ":" .. n) end
    statuses = table.concat(parts, ",")
  end
end

function done(summary, latency, requests_)
  local failed, counts, codes = 0, {}, {}
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("non2xx")
    for code, n in string.gmatch(thread:get("statuses"), "(%d+):(%d+)") do
      counts[code] = (counts[code] or 0) + tonumber(n)
    end
  end
  for code, n in pairs(counts) do table.insert(codes, code .. ":" .. n) end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f mean_ms=%.3f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
    summary.requests, seconds, summary.requests / seconds, latency.mean / 1000,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
  io.write(string.format(
    "FAILURES total=%d non2xx=%d connect=%d read=%d write=%d timeout=%d statuses=%s\n",
    failed + e.connect + e.read + e.write + e.timeout, failed, e.connect, e.read, e.write,
    e.timeout, #codes > 0 and table.concat(codes, ",") or "-"))
end
