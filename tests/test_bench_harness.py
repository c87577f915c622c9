"""The `make bench` harness's own logic: parsing wrk and pgbench, percentiles, the highest
clean rate, ratios, the pgbench script made from captured SQL, the wrk script, the report,
and the constant-rate generator against a local server. No timing is asserted."""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import http_bench  # noqa: E402
import loadgen  # noqa: E402
import report  # noqa: E402

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8950
  2 threads and 16 connections
  Non-2xx or 3xx responses: 5
WRKJSON {"requests": 205, "duration_us": 10000000, "connect": 0, "read": 1, "write": 0, \
"non_2xx": 5, "timeout": 0, "p50_us": 17000, "p95_us": 40000, "p99_us": 90500, \
"max_us": 120000, "mean_us": 20000.0}
"""

PGBENCH_OUTPUT = """transaction type: create_confirm.sql
number of clients: 16
number of transactions actually processed: 2870
number of failed transactions: 0 (0.000%)
latency average = 55.123 ms
tps = 287.123456 (without initial connection time)
"""


def test_parse_wrk():
    r = http_bench.parse_wrk(WRK_OUTPUT)
    assert r["requests"] == 205 and r["ok"] == 200 and r["non_2xx"] == 5
    assert r["socket_errors"] == 1
    assert r["rate"] == pytest.approx(20.0)
    assert (r["p50_ms"], r["p99_ms"]) == (17.0, 90.5)


def test_parse_wrk_without_summary_fails_loudly():
    with pytest.raises(ValueError):
        http_bench.parse_wrk("unable to connect to 127.0.0.1:8950 Connection refused")


def test_parse_pgbench():
    r = http_bench.parse_pgbench(PGBENCH_OUTPUT)
    assert r == {"rate": pytest.approx(287.123456), "requests": 2870, "failed": 0}


def test_percentiles_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert http_bench.percentiles(values) == {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0}
    assert http_bench.percentiles([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    assert loadgen.percentile([1.0, 2.0, 3.0], 50) == 2.0


def test_highest_clean_rate_and_ratio():
    def step(rate, **errors):
        base = {"target_rate": rate, "sent": 10, "ok": 10, "non_2xx": 0, "socket_errors": 0,
                "timeouts": 0}
        base.update(errors)
        if errors:
            base["ok"] = 10 - sum(errors.values())
        return base

    steps = [step(10), step(20), step(30, timeouts=1), step(25, non_2xx=1)]
    assert http_bench.highest_clean_rate(steps) == 20
    assert http_bench.highest_clean_rate([step(5, socket_errors=2)]) is None
    assert http_bench.ratio(18, 900) == pytest.approx(0.02)
    assert http_bench.ratio(None, 900) is None and http_bench.ratio(5, 0) is None


def test_pgbench_script_renames_new_ids_and_keeps_existing_ones():
    sql = [
        "BEGIN",
        "INSERT INTO payments_payment (id, merchant_id, payment_method_id) VALUES "
        "('pay_AbCdEf123456', 'mer_Existing0001', 'pm_Existing00002')",
        "UPDATE payments_payment SET status = 'succeeded'\n WHERE id = 'pay_AbCdEf123456'",
        "INSERT INTO payments_idempotencykey (key) VALUES ('0123456789abcdef0123456789abcdef')",
        "COMMIT",
    ]
    script = http_bench.pgbench_script(sql, keep={"mer_Existing0001", "pm_Existing00002"})
    lines = script.strip().splitlines()
    assert lines[:2] == ["\\set v0 random(1, 1000000000000)",
                         "\\set v1 random(1, 1000000000000)"]
    assert lines[2] == "BEGIN;"
    assert "'pay_:client_id:v0'" in lines[3] and "'mer_Existing0001'" in lines[3]
    assert lines[4].endswith("WHERE id = 'pay_:client_id:v0';")  # one line, same variable
    assert "':client_id:v1'" in lines[5]
    assert lines[6] == "COMMIT;"


def test_wrk_script_is_filled_in():
    spec = {"method": "POST", "path": "/v1/payments/{id}/capture", "body": "{}",
            "headers": {"Authorization": "Bearer sk_test_x", "Idempotency-Key": "{key}"},
            "ids": ["pay_1", "pay_2"]}
    lua = http_bench.wrk_lua(spec)
    assert 'METHOD = "POST"' in lua and 'BODY = "{}"' in lua
    assert '["Content-Type"] = "application/json"' in lua
    assert 'IDS = {"pay_1", "pay_2"}' in lua
    assert "__" not in lua.split("local threads")[0]  # every placeholder filled


def test_loadgen_builds_requests():
    spec = {"host": "127.0.0.1", "port": 1, "method": "POST", "path": "/p/{id}",
            "headers": {"Idempotency-Key": "{key}"}, "body": '{"x": "{id}"}', "ids": ["a", "b"]}
    raw = loadgen.build_request(spec, 1, "tag").decode()
    assert raw.startswith("POST /p/b HTTP/1.1\r\n")
    assert "Idempotency-Key: tag-1\r\n" in raw
    assert raw.endswith('\r\n\r\n{"x": "b"}') and "Content-Length: 10\r\n" in raw


def test_loadgen_counts_answers_of_a_local_server():
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"{}"
            self.send_response(404 if self.path.endswith("missing") else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import asyncio

        spec = {"host": "127.0.0.1", "port": server.server_address[1], "method": "GET",
                "path": "/{id}", "headers": {}, "body": None, "ids": ["ok", "ok", "missing"]}
        result = asyncio.run(loadgen.run(spec, rate=60, duration=0.25, connections=4,
                                         timeout=10))
    finally:
        server.shutdown()
        server.server_close()
    assert result["sent"] == 15
    assert result["ok"] == 10 and result["non_2xx"] == 5
    assert result["timeouts"] == 0 and result["socket_errors"] == 0
    assert result["statuses"] == {"200": 10, "404": 5}
    assert result["generator_cpu_s"] >= 0


def test_report_renders_every_section():
    closed = {"rate": 20.0, "requests": 200, "ok": 200, "non_2xx": 0, "socket_errors": 0,
              "p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 30.0, "cpu_ms_per_req": 50.0,
              "sandbox_cpu_ms_per_req": 5.0, "generator_cpu_ms_per_req": 0.2,
              "xacts_per_req": 10.0, "redis_cmds_per_req": 12.0}
    step = {"target_rate": 16.0, "sent": 100, "ok": 100, "non_2xx": 0, "socket_errors": 0,
            "timeouts": 0, "achieved_rate": 16.0, "p50_ms": 90.0, "p99_ms": 120.0,
            "generator_cpu_ms_per_req": 0.5, "cpu_ms_per_req": 50.0}
    slow = {**step, "p50_ms": 400.0, "p99_ms": 470.0}
    arms = ["pgbench", "floor", "create", "create_slow", "inproc", "capture", "refund",
            "retrieve", "list"]
    results = {
        "machine": {k: "x" for k in ("date", "commit", "cpu", "memory", "kernel", "python",
                                     "postgres", "redis", "wrk", "loadavg", "loadavg_end")},
        "seconds": 8, "rounds": 2, "elapsed_s": 600, "latency_ms": 150, "timeout_s": 2,
        "closed": {arm: [dict(closed, rate=300.0 if arm in ("pgbench", "floor") else 20.0)]
                   for arm in arms},
        "constant": {arm: [step] for arm in arms},
        "criterion": {"0": step, "150": slow},
        "models": {"m": {"0": [closed], "150": [closed]}},
        "profile": {"create": {"statements": 36, "transactions": 10, "redis_round_trips": 9,
                               "redis_commands": 13, "kinds": {"SELECT": 21}}},
    }
    text = report.render_report(results)
    for heading in ("### Closed loop", "### Constant rate", "### Concurrency models",
                    "### Per request"):
        assert heading in text
    assert "c/a = 0.067, c/b = 0.067" in text
    assert "**met**" in text  # 470 ≤ 120 + 2 × 150 + 60
    json.dumps(results)  # what is written to bench/results


def test_write_section_replaces_only_its_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n")
    http_bench.write_section(readme, "first")
    http_bench.write_section(readme, "second")
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert text.count(http_bench.START) == 1 and "second" in text and "first" not in text
