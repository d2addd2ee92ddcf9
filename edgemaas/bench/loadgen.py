"""A closed-loop HTTP load generator (stdlib only), run in its own process by the serving benchmark.

`concurrency` keep-alive connections to one server on 127.0.0.1 each send the same POST, wait for the whole answer,
and send the next, until `requests` answers have come back (after `warmup` uncounted ones). Every answer that is not
a 200, and every connection error or timeout, is an error. HTTP/1.1 is parsed by hand on asyncio streams: one
thread drives every connection, so the generator costs the machine as little as a Python client can.

    echo '{"port": 8080, "path": "/predict", "body": "...", "concurrency": 8, "requests": 1000}' \\
        | python -m edgemaas.bench.loadgen
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

TIMEOUT_S = 30.0  # one answer; a server slower than this is counted as an error, and the connection replaced


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0-100) of values (sorted here)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(q / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


class _Run:
    def __init__(self, config: dict[str, Any]) -> None:
        self.host = config.get("host", "127.0.0.1")
        self.port = int(config["port"])
        body = config["body"].encode()
        headers = {"Host": f"{self.host}:{self.port}", "Content-Type": "application/json",
                   "Content-Length": str(len(body)), **config.get("headers", {})}
        head = f"POST {config['path']} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.request = head.encode() + b"\r\n" + body
        self.concurrency = int(config["concurrency"])
        self.warmup = int(config.get("warmup", 0))
        self.requests = int(config["requests"])
        self.streams: list[Any] = [None] * self.concurrency  # (reader, writer) per connection, kept across phases
        self.left = 0
        self.counting = False
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []

    def _error(self, what: str) -> None:
        if self.counting:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(what[:300])

    async def connection(self, i: int) -> None:
        while self.left > 0:
            self.left -= 1
            began = time.perf_counter()
            try:
                if self.streams[i] is None:
                    self.streams[i] = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                             TIMEOUT_S)
                reader, writer = self.streams[i]
                writer.write(self.request)
                status, close, text = await asyncio.wait_for(_answer(reader), TIMEOUT_S)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                self._error(f"{type(exc).__name__}: {exc}")
                self._drop(i)
                continue
            if self.counting:
                if status == 200:
                    self.latencies.append(time.perf_counter() - began)
                else:
                    self._error(f"HTTP {status}: {text[:200]}")
            if close:
                self._drop(i)

    def _drop(self, i: int) -> None:
        if self.streams[i] is not None:
            self.streams[i][1].close()
            self.streams[i] = None

    async def _phase(self, count: int) -> float:
        self.left = count
        began = time.perf_counter()
        await asyncio.gather(*(self.connection(i) for i in range(self.concurrency)))
        return time.perf_counter() - began

    async def main(self) -> dict[str, Any]:
        await self._phase(self.warmup)
        self.counting = True
        seconds = await self._phase(self.requests)
        for i in range(self.concurrency):
            self._drop(i)
        ms = [x * 1000 for x in self.latencies]
        return {"requests": self.requests, "errors": self.errors, "seconds": round(seconds, 3),
                "rps": round(self.requests / seconds, 1) if seconds else 0.0,
                "p50_ms": round(percentile(ms, 50), 3), "p90_ms": round(percentile(ms, 90), 3),
                "p99_ms": round(percentile(ms, 99), 3), "error_samples": self.error_samples}


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool, str]:
    """(status, server closes the connection, body text) of one HTTP/1.1 response."""
    line = await reader.readline()
    if not line:
        raise asyncio.IncompleteReadError(b"", None)
    parts = line.split(None, 2)
    status = int(parts[1])
    length, chunked, close = 0, False, False
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        body = await reader.readexactly(length)
    return status, close, bytes(body[:300]).decode("utf-8", "replace") if status != 200 else ""


def run(config: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_Run(config).main())


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))))
