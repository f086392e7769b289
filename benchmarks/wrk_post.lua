-- wrk script: POST the body in BENCH_BODY, then print one line "BENCH_JSON {...}" with the
-- request count, errors and the exact latency histogram (microsecond buckets), so the
-- harness can merge several short runs and compute its own percentiles.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"model":"llama3","prompt":"hi","stream":false}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local hist = {}
  for i = 1, #latency do
    local value, count = latency(i)
    hist[#hist + 1] = string.format("[%d,%d]", value, count)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_s":%f,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"hist":[%s]}\n',
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(hist, ",")))
end
