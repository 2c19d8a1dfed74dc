-- wrk script for scripts/bench_serve.sh: POST /v1/search/text with JSON bodies
-- {"query": TEXT, "k": K, "target": "images"}, rotating through the query texts of a file (one
-- a line, made by scripts/bench/make_queries.py):
--   wrk -tT -cC -d20s --timeout 10s -s scripts/bench/search_text.lua URL -- QUERIES_FILE K OFFSET T
-- The N texts are split into T contiguous slices, one per wrk thread (T must be wrk's -t), and
-- each thread cycles through its own slice from position OFFSET (mod the slice's length). So
-- no two consecutive requests of a thread repeat a text, no two threads ever send the same
-- text, requests in flight at the same time are distinct while C / T < N / T, and together the
-- threads cycle through the whole file: nothing a server might cache is asked twice until the
-- whole list has gone by. The same arguments give every server the same sequence.
-- Any response that is not 2xx counts as a failure (wrk's own "Non-2xx or 3xx" line only
-- counts >= 400). done() prints three machine-readable lines:
--   RESULT requests=N duration_s=S rps=R mean_ms=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..
--   FAILURES total=N non2xx=N connect=N read=N write=N timeout=N statuses=CODE:COUNT,...
--   QUERIES distinct=N sent=N cycles=X
-- (total = non-2xx responses + socket errors; cycles = sent / distinct).

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

local slice = {}  -- this thread's prepared requests
local position = 0
distinct = 0  -- texts in the whole file
sent = 0
non2xx = 0
statuses = ""
local by_status = {}

function init(args)
  local path = assert(args[1], "usage: -- QUERIES_FILE [K] [OFFSET] [THREADS]")
  local k = tonumber(args[2] or "10")
  local offset = tonumber(args[3] or "0")
  local nthreads = tonumber(args[4] or "1")
  assert(id < nthreads, "THREADS (" .. nthreads .. ") must equal wrk's -t")
  local texts = {}
  for line in io.lines(path) do
    if line ~= "" then table.insert(texts, line) end
  end
  distinct = #texts
  assert(distinct >= 2 * nthreads, "too few query texts in " .. path)
  local first = math.floor(id * distinct / nthreads) + 1
  local last = math.floor((id + 1) * distinct / nthreads)
  local headers = { ["Content-Type"] = "application/json" }
  for i = first, last do
    local body = '{"query": ' .. json_string(texts[i]) .. ', "k": ' .. k .. ', "target": "images"}'
    table.insert(slice, wrk.format("POST", "/v1/search/text", headers, body))
  end
  position = offset % #slice
end

function request()
  position = position % #slice + 1
  sent = sent + 1
  return slice[position]
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
  local failed, total_sent, distinct_, counts, codes = 0, 0, 0, {}, {}
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("non2xx")
    total_sent = total_sent + thread:get("sent")
    distinct_ = thread:get("distinct")
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
  io.write(string.format("QUERIES distinct=%d sent=%d cycles=%.2f\n", distinct_, total_sent,
    distinct_ > 0 and total_sent / distinct_ or 0))
end
