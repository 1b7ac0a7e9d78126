-- wrk -s: every request is a POST of the same 100 KB body (102400 bytes of "x").
-- Must match POST_BODY_BYTES/POST_BODY_BYTE in benchmarks/harness/servers.py.
wrk.method = "POST"
wrk.body = string.rep("x", 102400)
wrk.headers["Content-Type"] = "application/octet-stream"
