"""Load test of the edge server on 127.0.0.1: errors, latency percentiles and the server's memory over time.

The server (`python -m edgemaas.edge_entry --model-dir DIR serve`) runs in its own process; this process drives it
with --concurrency threads, each holding one keep-alive connection (http.client, stdlib only), until --requests
requests are answered. Every answer must be a 200 whose bytes equal what the runtime answers here for the same
request; anything else (another status, other bytes, a connection error) counts as an error. The server's RSS is
read from /proc/<pid>/status every --sample-interval seconds; warm-up is the first 10% of the requests, and growth
is the RSS at the end minus the RSS when warm-up ended. Prints a Markdown table; exits 1 if there was any error.

    python benchmarks/load_edge.py [--model cnn] [--workspace .] [--model-dir DIR] [--requests 20000]
                                   [--concurrency 32] [--batch 1] [--workers N] [--json FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgemaas.fsutil import atomic_write_json  # noqa: E402 (after the path set-up)
from edgemaas.local.process import proc_memory_kb  # noqa: E402 (after the path set-up)

WARMUP_SHARE = 0.10
DISTINCT_BODIES = 64
_SHOWN_ERRORS = 5


@dataclass
class LoadResult:
    model: str
    variant: str
    requests: int
    concurrency: int
    batch: int
    workers: int
    seconds: float
    requests_per_s: float
    latency_ms: dict[str, float]  # p50, p90, p99, max
    errors: int
    error_examples: list[str]
    rss_mb_after_warmup: float
    rss_mb_end: float
    rss_growth_mb: float
    rss_trend_mb_per_100k: float  # least-squares slope of RSS against requests answered, after warm-up
    peak_rss_mb: float  # VmHWM
    server_exit_code: int | None
    rss_samples: list[tuple[float, int, float]] = field(default_factory=list)  # (seconds, requests done, RSS MB)


def start_server(model_dir: Path, log_path: Path, workers: int) -> tuple[subprocess.Popen, int]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "edgemaas.edge_entry", "--model-dir", str(model_dir),
                                    "serve", "--port", "0", "--quiet", "--workers", str(workers)],
                                   cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"on http://127\.0\.0\.1:(\d+);", log_path.read_text(errors="replace"))
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            raise SystemExit(f"the edge server exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the edge server did not start listening within 60 s:\n{log_path.read_text()}")


class Driver:
    """--concurrency threads, one keep-alive connection each, sharing one request counter."""

    def __init__(self, port: int, bodies: list[bytes], expected: list[bytes], total: int, concurrency: int) -> None:
        self.port, self.bodies, self.expected, self.total = port, bodies, expected, total
        # Connections stay open until the end has been measured: closing them ends server threads, which frees
        # memory and would hide growth.
        self.finished = threading.Barrier(concurrency + 1)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.next = 0
        self.done = 0
        self.errors = 0
        self.error_examples: list[str] = []
        self.latencies: list[float] = []

    def _take(self) -> int | None:
        with self.lock:
            if self.next >= self.total:
                return None
            self.next += 1
            return self.next - 1

    def _finish(self, seconds: float, problem: str | None) -> None:
        with self.lock:
            self.done += 1
            self.latencies.append(seconds)
            if problem is not None:
                self.errors += 1
                if len(self.error_examples) < _SHOWN_ERRORS:
                    self.error_examples.append(problem)

    def worker(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"}
        try:
            while (i := self._take()) is not None:
                body, problem = self.bodies[i % len(self.bodies)], None
                started = time.perf_counter()
                try:
                    connection.request("POST", "/predict", body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    if response.status != 200:
                        problem = f"request {i}: HTTP {response.status}: {data[:200]!r}"
                    elif data != self.expected[i % len(self.expected)]:
                        problem = f"request {i}: a different answer than the runtime's: {data[:200]!r}"
                    if response.will_close:
                        connection.close()
                except (OSError, http.client.HTTPException) as exc:
                    problem = f"request {i}: {type(exc).__name__}: {exc}"
                    connection.close()  # reconnects on the next request
                self._finish(time.perf_counter() - started, problem)
        finally:
            try:
                self.finished.wait()
            except threading.BrokenBarrierError:
                pass
            self.release.wait()
            connection.close()


def run_load(model_dir: Path, requests: int = 20_000, concurrency: int = 32, batch: int = 1,
             workers: int | None = None, sample_interval_s: float = 0.1, data: Path | None = None,
             report: Any = lambda message: None) -> LoadResult:
    """Serve model_dir in a child process and load it with samples from `data` (default: the workspace's held-out
    data.npz beside the variant folder); see the module's docstring."""
    import numpy as np

    from edgemaas.runtime import load_model
    from edgemaas.runtime.service import Service

    model_dir = Path(model_dir)
    service = Service(load_model(model_dir))
    manifest = service.model.manifest
    data = Path(data) if data else model_dir.parent / "data.npz"
    if not data.is_file():
        raise SystemExit(f"no held-out data at {data}: pass --data (a .npz with x_test)")
    with np.load(data) as arrays:
        held_out = arrays["x_test"]
    bodies, expected = [], []
    for start in range(DISTINCT_BODIES):
        chunk = [held_out[(start * batch + j) % len(held_out)].tolist() for j in range(batch)]
        body = json.dumps({"inputs": chunk}).encode()
        reply = service.handle_body(body)
        assert reply.ok, reply.text
        bodies.append(body)
        expected.append(reply.text.encode())
    workers = workers or min(4, os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="edgemaas-load-") as tmp:
        log_path = Path(tmp) / "server.log"
        process, port = start_server(model_dir, log_path, workers)
        report(f"serving {manifest.name} {manifest.variant} on 127.0.0.1:{port} (pid {process.pid}, {workers} "
               f"worker(s)); {requests} requests at concurrency {concurrency}, batch {batch}")
        driver = Driver(port, bodies, expected, requests, concurrency)
        samples: list[tuple[float, int, float]] = []
        stop = threading.Event()
        began = time.perf_counter()

        def sample() -> None:
            while not stop.is_set():
                rss, _ = proc_memory_kb(process.pid)
                samples.append((time.perf_counter() - began, driver.done, rss / 1024))
                stop.wait(sample_interval_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=driver.worker, daemon=True) for _ in range(concurrency)]
        try:
            for thread in threads:
                thread.start()
            driver.finished.wait()  # every request answered, every connection still open
            seconds = time.perf_counter() - began
            stop.set()
            sampler.join()
            end_rss, peak = proc_memory_kb(process.pid)
            samples.append((seconds, driver.done, end_rss / 1024))
            alive = process.poll() is None
        finally:
            stop.set()
            driver.release.set()
            driver.finished.abort()  # if we got here by an exception, no worker waits forever
            for thread in threads:
                if thread.ident is not None:
                    thread.join()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                exit_code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                exit_code = process.wait()
        log = log_path.read_text(errors="replace")
    if not alive:
        driver.errors += 1
        driver.error_examples.append(f"the server died during the run (exit {exit_code}): {log[-500:]}")
    if "Traceback" in log:
        driver.errors += 1
        driver.error_examples.append(f"the server logged a traceback: {log[log.index('Traceback'):][:500]}")

    warm = next((rss for _, done, rss in samples if done >= requests * WARMUP_SHARE), samples[-1][2])
    after = [(done, rss) for _, done, rss in samples if done >= requests * WARMUP_SHARE]
    trend = statistics.linear_regression(*zip(*after)).slope * 100_000 if len({d for d, _ in after}) > 1 else 0.0
    quantiles = statistics.quantiles(driver.latencies, n=100, method="inclusive")
    return LoadResult(
        model=manifest.name, variant=manifest.variant, requests=driver.done, concurrency=concurrency, batch=batch,
        workers=workers, seconds=round(seconds, 3), requests_per_s=round(driver.done / seconds, 1),
        latency_ms={"p50": round(quantiles[49] * 1000, 2), "p90": round(quantiles[89] * 1000, 2),
                    "p99": round(quantiles[98] * 1000, 2), "max": round(max(driver.latencies) * 1000, 2)},
        errors=driver.errors, error_examples=driver.error_examples,
        rss_mb_after_warmup=round(warm, 1), rss_mb_end=round(end_rss / 1024, 1),
        rss_growth_mb=round(end_rss / 1024 - warm, 1), rss_trend_mb_per_100k=round(trend, 2),
        peak_rss_mb=round(peak / 1024, 1),
        server_exit_code=exit_code, rss_samples=[(round(t, 2), n, round(m, 1)) for t, n, m in samples],
    )


def markdown(result: LoadResult) -> str:
    latency = result.latency_ms
    rows = [
        ("model", f"{result.model} ({result.variant})"),
        ("requests (concurrency, batch)", f"{result.requests} ({result.concurrency}, {result.batch})"),
        ("server workers", str(result.workers)),
        ("errors", str(result.errors)),
        ("throughput", f"{result.requests_per_s:.0f} requests/s over {result.seconds:.1f} s"),
        ("latency p50 / p90 / p99 / max",
         f"{latency['p50']:.1f} / {latency['p90']:.1f} / {latency['p99']:.1f} / {latency['max']:.1f} ms"),
        ("server RSS after warm-up (first 10%)", f"{result.rss_mb_after_warmup:.1f} MB"),
        ("server RSS at the end", f"{result.rss_mb_end:.1f} MB (growth {result.rss_growth_mb:+.1f} MB)"),
        ("server RSS trend after warm-up", f"{result.rss_trend_mb_per_100k:+.2f} MB per 100,000 requests"),
        ("server peak RSS (VmHWM)", f"{result.peak_rss_mb:.1f} MB"),
        ("server exit on SIGTERM", str(result.server_exit_code)),
    ]
    return "\n".join(["| measure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def resolve_model_dir(args: argparse.Namespace) -> Path:
    if args.model_dir:
        return Path(args.model_dir)
    from edgemaas.errors import UserError
    from edgemaas.pipeline import chosen_variant
    from edgemaas.workspace import Workspace

    try:
        return chosen_variant(Workspace(Path(args.workspace).resolve()), args.model)
    except UserError as exc:
        raise SystemExit(f"{exc}\n(build it with `./dev.sh build`, or pass --model-dir)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn", help="a model built in --workspace (default cnn)")
    parser.add_argument("--workspace", default=str(REPO), help="workspace root, holding build/ (default: the repo)")
    parser.add_argument("--model-dir", help="a variant folder (manifest.json + model), instead of --model")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1, help="samples per request")
    parser.add_argument("--workers", type=int, help="server model replicas (default: the server's)")
    parser.add_argument("--data", type=Path, help="a .npz whose x_test holds the samples to send (default: the "
                        "workspace's held-out data beside the variant folder)")
    parser.add_argument("--sample-interval", type=float, default=0.1, help="seconds between RSS samples")
    parser.add_argument("--json", type=Path, help="also write the result (with every RSS sample) here")
    args = parser.parse_args(argv)
    if args.requests < 10 or args.concurrency < 1 or args.batch < 1:
        parser.error("--requests must be at least 10, --concurrency and --batch at least 1")
    model_dir = resolve_model_dir(args)
    result = run_load(model_dir, args.requests, args.concurrency, args.batch, args.workers, args.sample_interval,
                      args.data, report=lambda message: print(message, file=sys.stderr, flush=True))
    if args.json:
        atomic_write_json(args.json, asdict(result))
    print(markdown(result))
    for example in result.error_examples:
        print(f"error: {example}", file=sys.stderr)
    return 1 if result.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
