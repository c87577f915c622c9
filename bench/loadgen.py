"""Constant-rate (open-loop) HTTP load generator for `make bench`: stdlib only, asyncio, raw
HTTP/1.1 keep-alive connections.

Request i is due at start + i/rate, whether or not earlier ones have answered (no coordinated
omission): its latency is measured from when it was due, so a server that falls behind shows
it in the percentiles instead of slowing the generator down. At most `--connections`
requests are in flight; one that finds none free waits, and that wait counts in its latency.
A request that has no answer `--timeout` seconds after it was due is an error (timeout).

    python bench/loadgen.py --spec SPEC.json --rate 50 --duration 10 [--connections 64]

SPEC.json: {"host", "port", "method", "path", "headers": {}, "body": str|null, "ids": [...]}
with `{id}` (ids[i % len(ids)]) and `{key}` (unique per request) placeholders in path, body
and header values. Prints one JSON object: counts, latency percentiles (ms) and this
process's own CPU time, so the report can show the generator was not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
import uuid


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def render(template: str | None, *, id_: str, key: str) -> str | None:
    if template is None:
        return None
    return template.replace("{id}", id_).replace("{key}", key)


def build_request(spec: dict, i: int, tag: str) -> bytes:
    ids = spec.get("ids") or [""]
    id_ = ids[i % len(ids)]
    key = f"{tag}-{i}"
    path = render(spec["path"], id_=id_, key=key)
    body = render(spec.get("body"), id_=id_, key=key)
    lines = [f"{spec['method']} {path} HTTP/1.1", f"Host: {spec['host']}:{spec['port']}"]
    for name, value in (spec.get("headers") or {}).items():
        lines.append(f"{name}: {render(value, id_=id_, key=key)}")
    payload = (body or "").encode()
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one HTTP/1.1 response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    keep_alive = headers.get("connection", "").lower() != "close"
    return status, keep_alive


async def run(spec: dict, rate: float, duration: float, connections: int,
              timeout: float) -> dict:
    loop = asyncio.get_running_loop()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    slots = asyncio.Semaphore(connections)
    tag = uuid.uuid4().hex[:12]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    counts = {"sent": 0, "ok": 0, "non_2xx": 0, "timeouts": 0, "socket_errors": 0}

    async def one(i: int, due: float) -> None:
        request = build_request(spec, i, tag)
        conn = None
        try:
            async with asyncio.timeout_at(due + timeout):
                async with slots:
                    conn = idle.pop() if idle else await asyncio.open_connection(
                        spec["host"], spec["port"])
                    reader, writer = conn
                    writer.write(request)
                    await writer.drain()
                    status, keep_alive = await read_response(reader)
            latencies.append((loop.time() - due) * 1000)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            counts["ok" if 200 <= status < 300 else "non_2xx"] += 1
            if keep_alive:
                idle.append(conn)
            else:
                conn[1].close()
        except TimeoutError:
            counts["timeouts"] += 1
            if conn is not None:
                conn[1].close()
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            counts["socket_errors"] += 1
            if conn is not None:
                conn[1].close()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    start = loop.time() + 0.05
    total = int(rate * duration)
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
        counts["sent"] += 1
    await asyncio.gather(*tasks)
    wall = time.monotonic() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for _, writer in idle:
        writer.close()
    latencies.sort()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "target_rate": rate, "duration_s": duration, "wall_s": round(wall, 3), **counts,
        "achieved_rate": round(counts["ok"] / duration, 2),
        "statuses": statuses,
        "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99), "max_ms": latencies[-1] if latencies else None,
        "generator_cpu_s": round(cpu, 3),
        "generator_cpu_ms_per_request": round(cpu * 1000 / max(1, counts["sent"]), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds after due")
    args = parser.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    result = asyncio.run(run(spec, args.rate, args.duration, args.connections, args.timeout))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
