"""The edge server against an attacker on the same network, with a well-behaved client running throughout (issue #17).

    .venv/bin/python benchmarks/hostile_edge.py --model-dir DIR [--seconds 15] [--valid 200] [--attack NAME ...]
                                                [--json FILE] [--quick] [-- extra serve options]

The server (`python -m edgemaas.edge_entry --model-dir DIR serve --port 0 --quiet`, its defaults unless options
follow `--`) runs in its own process; each attack runs in another process (this script with --attacker), from the
loopback addresses 127.0.0.2-127.0.0.11 (a hostile network has many hosts); the valid client runs in this process
from 127.0.0.1: `--valid` requests spread over the attack, each on a new connection (http.client), batch 1. Per
attack it prints: valid requests answered (200) and their p99 latency, the server's peak RSS during the attack
(VmHWM, reset before each attack through /proc/PID/clear_refs), whether the server stayed up, and what the
attacker saw (status codes; "reset" and "no status" are connections that read no status line).

Goals (issue #17): the valid client gets >= 99 % of its answers with p99 under 1 s during every attack, peak RSS
stays under the memory budget, every refused client reads a status line (every attacker that sent a whole request:
header flood, amplification, largest batches, smuggling, refused clients). Exit status 1 when a goal is missed.
Loopback only; every attack is bounded in connections and time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
ATTACKER_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 12)]
MB = 1024 * 1024


# ---------------------------------------------------------------------------------------------------------------
# The attacks: each runs threads until `end`, and counts what it saw in `seen`


@dataclass
class Target:
    port: int
    max_request_bytes: int
    sample: Any  # one valid sample (a nested list or a string)


class Seen:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1


def _connect(source: str, port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def _status_of(sock: socket.socket, seen: Seen, until: float) -> None:
    """Read what the server answers until it closes; count its status line (or that there was none)."""
    data = b""
    try:
        while time.monotonic() < until:
            sock.settimeout(max(0.1, until - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > 4096:
                break
    except ConnectionResetError:
        seen.add("reset" if not data else _code(data))
        return
    except OSError:
        pass
    seen.add(_code(data) if data else "no status")


def _code(data: bytes) -> str:
    found = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return found.group(1).decode() if found else "no status"


def _loop(n: int, end: float, one: Callable[[str, random.Random], None]) -> None:
    """n threads, each repeating `one(source_address, rng)` until `end`."""
    def run(i: int) -> None:
        rng = random.Random(i)
        source = ATTACKER_ADDRESSES[i % len(ATTACKER_ADDRESSES)]
        while time.monotonic() < end:
            try:
                one(source, rng)
            except OSError:
                time.sleep(0.05)
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.1, end - time.monotonic() + 15))


def slowloris(target: Target, end: float, seen: Seen, n: int = 150, interval: float = 3.0) -> None:
    """n connections sending a request head one byte every `interval` s; reconnecting when closed."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000

    def one(source: str, rng: random.Random) -> None:
        with _connect(source, target.port) as sock:
            time.sleep(rng.random() * interval)
            for byte in head:
                if time.monotonic() >= end:
                    return
                sock.sendall(bytes([byte]))
                time.sleep(interval)
    _loop(n, end, lambda s, r: _counted(seen, "connections", one, s, r))


def slow_body(target: Target, end: float, seen: Seen, n: int = 150, interval: float = 1.0) -> None:
    """n connections sending a complete head (Content-Length: the limit), then the body one byte every `interval` s."""
    length = target.max_request_bytes

    def one(source: str, rng: random.Random) -> None:
        with _connect(source, target.port) as sock:
            sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
            while time.monotonic() < end:
                sock.sendall(b" ")
                time.sleep(interval)
                sock.settimeout(0.0)
                try:
                    if sock.recv(65536, socket.MSG_PEEK):
                        break
                except (BlockingIOError, InterruptedError):
                    continue
                finally:
                    sock.settimeout(10.0)
            _status_of(sock, seen, time.monotonic() + 2)
    _loop(n, end, one)


def header_flood(target: Target, end: float, seen: Seen, n: int = 120, lines: int = 98) -> None:
    """n connections each sending a head of `lines` header lines of 64 KB."""
    line = b"X-Big: " + b"b" * (64 * 1024 - 10) + b"\r\n"

    def one(source: str, rng: random.Random) -> None:
        with _connect(source, target.port) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                for _ in range(lines):
                    sock.sendall(line)
                sock.sendall(b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            _status_of(sock, seen, time.monotonic() + 5)
    _loop(n, end, one)


def _post(source: str, port: int, body: bytes, seen: Seen, headers: dict[str, str] | None = None,
          path: str = "/predict") -> None:
    """One POST through http.client (sends the whole request, then reads): count the status or the failure."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        seen.add(str(response.status))
    except (BrokenPipeError, ConnectionResetError):
        seen.add("reset")
    except (http.client.RemoteDisconnected, http.client.BadStatusLine):
        seen.add("no status")
    except TimeoutError:
        seen.add("timeout")
    finally:
        connection.close()


def amplification(target: Target, end: float, seen: Seen, n: int = 16) -> None:
    """n parallel POSTs of `[{},{},...]` (JSON that inflates ~25x when parsed) at the size limit, and at 6 MB."""
    at_limit = b"[" + b",".join([b"{}"] * ((target.max_request_bytes - 2) // 3)) + b"]"
    six_mb = b"[" + b",".join([b"{}"] * ((6 * MB - 2) // 3)) + b"]"
    lists = b"[" + b",".join([b"[[]]"] * ((target.max_request_bytes - 2) // 5)) + b"]"
    _loop(n, end, lambda source, rng: _post(source, target.port, rng.choice([at_limit, six_mb, lists]), seen))


def max_requests(target: Target, end: float, seen: Seen, n: int = 16) -> None:
    """n parallel legal requests of the largest batch (the memory a legal client can make the server spend)."""
    body = json.dumps({"inputs": [target.sample] * 256}).encode()
    _loop(n, end, lambda source, rng: _post(source, target.port, body, seen))


def smuggling(target: Target, end: float, seen: Seen, n: int = 8) -> None:
    """Framing tricks: Content-Length with Transfer-Encoding, a large chunked upload (http.client), Expect with
    chunked, two Content-Lengths, a pipelined second request inside a body, `//predict`."""
    good = json.dumps({"inputs": [target.sample]}).encode()
    raw = [
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        f"POST //predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(good)}\r\n\r\n".encode() + good,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    ]

    def one(source: str, rng: random.Random) -> None:
        if rng.random() < 0.3:  # a large chunked upload, the way http.client sends an iterable
            chunks = iter([b"[" * 1000] * 2000)
            _post(source, target.port, chunks, seen, {"Transfer-Encoding": "chunked"})  # type: ignore[arg-type]
            return
        with _connect(source, target.port) as sock:
            sock.sendall(rng.choice(raw))
            sock.shutdown(socket.SHUT_WR)
            _status_of(sock, seen, time.monotonic() + 5)
    _loop(n, end, one)


def connection_flood(target: Target, end: float, seen: Seen, n: int = 300) -> None:
    """n connections that send nothing, reopened as soon as the server closes them."""
    def one(source: str, rng: random.Random) -> None:
        with _connect(source, target.port, timeout=30) as sock:
            seen.add("connections")
            sock.settimeout(max(0.1, end - time.monotonic()))
            try:
                sock.recv(1)
            except TimeoutError:
                pass
    _loop(n, end, one)


def refused_clients(target: Target, end: float, seen: Seen, n: int = 40) -> None:
    """One address holds every connection it may (idle, reopened), and meanwhile sends n parallel http.client POSTs of
    a large legal body: those the server refuses must read their 503, not a broken pipe."""
    source = ATTACKER_ADDRESSES[0]
    body = json.dumps({"inputs": [target.sample] * 256}).encode()
    holders: list[socket.socket] = []

    def hold() -> None:
        while time.monotonic() < end:
            holders[:] = [s for s in holders if _open(s)]
            while len(holders) < 200 and time.monotonic() < end:
                try:
                    holders.append(_connect(source, target.port))
                except OSError:
                    break
            time.sleep(0.05)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    time.sleep(0.5)

    def post() -> None:
        while time.monotonic() < end:
            _post(source, target.port, body, seen)
    threads = [threading.Thread(target=post, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in [*threads, holder]:
        thread.join(max(0.1, end - time.monotonic() + 35))
    for sock in holders:
        sock.close()


def _open(sock: socket.socket) -> bool:
    sock.settimeout(0.0)
    try:
        if sock.recv(1, socket.MSG_PEEK) == b"":
            sock.close()
            return False
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        sock.close()
        return False
    return True


def _counted(seen: Seen, what: str, one: Callable[[str, random.Random], None], source: str,
             rng: random.Random) -> None:
    seen.add(what)
    one(source, rng)


ATTACKS: dict[str, Callable[..., None]] = {
    "slowloris": slowloris, "slow-body": slow_body, "header-flood": header_flood, "amplification": amplification,
    "max-requests": max_requests, "smuggling": smuggling, "connection-flood": connection_flood,
    "refused-clients": refused_clients,
}
QUICK = {"slowloris": {"n": 150, "interval": 1.0}, "slow-body": {"n": 150}, "header-flood": {"n": 40},
         "amplification": {"n": 8}, "max-requests": {"n": 8}, "smuggling": {"n": 4},
         "connection-flood": {"n": 200}, "refused-clients": {"n": 16}}
# Codes that are not a readable refusal: the client saw no status line.
UNREAD = ("reset", "no status")
# Attacks whose clients send whole requests: every one must read a status line. (A slowloris, a silent connection or a
# slow body let go for a newcomer never finished its request: it is closed without one.)
WHOLE_REQUESTS = ("header-flood", "amplification", "max-requests", "smuggling", "refused-clients")


def attacker_main(args: argparse.Namespace) -> int:
    target = Target(**json.loads(args.target))
    seen = Seen()
    ATTACKS[args.attacker](target, time.monotonic() + args.seconds, seen, **json.loads(args.attack_options))
    print(json.dumps(dict(seen.counts)))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The server, the valid client, the measurements


@dataclass
class AttackResult:
    attack: str
    valid_sent: int
    valid_answered: int
    p99_ms: float
    peak_rss_mb: float
    stayed_up: bool
    attacker_saw: dict[str, int]
    other_valid: dict[str, int] = field(default_factory=dict)

    @property
    def answered_share(self) -> float:
        return self.valid_answered / self.valid_sent if self.valid_sent else 0.0


@contextmanager
def edge_server(model_dir: Path, log: Path, extra: list[str], python: str, cwd: Path) -> Iterator[tuple[int, int,
                                                                                                    subprocess.Popen]]:
    """(port, max request bytes, process) of `python -m edgemaas.edge_entry serve`, until the block ends."""
    with open(log, "wb") as out:
        process = subprocess.Popen([python, "-m", "edgemaas.edge_entry", "--model-dir", str(model_dir), "serve",
                                    "--port", "0", "--quiet", *extra], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"on http://127\.0\.0\.1:(\d+);.*?requests up to (\d+) bytes",
                                      log.read_text(errors="replace"))):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the edge server did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield int(found.group(1)), int(found.group(2)), process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS (Linux 4.0+)


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        found = re.search(r"VmHWM:\s+(\d+) kB", handle.read())
    return int(found.group(1)) / 1024 if found else float("nan")


def valid_client(port: int, body: bytes, count: int, seconds: float) -> tuple[list[float], Counter[str]]:
    """`count` requests spread over `seconds` (open loop: each on its own thread and new connection, so one that
    hangs does not hold back the next); latencies (s) of the 200s, and the other outcomes."""
    latencies: list[float] = []
    other: Counter[str] = Counter()
    lock = threading.Lock()

    def one() -> None:
        began = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            outcome = "200" if response.status == 200 else str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            outcome = type(exc).__name__
        finally:
            connection.close()
        with lock:
            if outcome == "200":
                latencies.append(time.perf_counter() - began)
            else:
                other[outcome] += 1

    threads = []
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i * seconds / count - time.monotonic()))
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(max(0.1, start + seconds + 15 - time.monotonic()))
    with lock:
        return list(latencies), Counter(other)


def _health(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False


def _sample(port: int) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/")
    described = json.loads(connection.getresponse().read())
    spec = described["inputs"][0]
    if spec.get("type") == "string":
        return "turn on the lights"

    def nested(shape: list[int]) -> Any:
        return [round(random.random(), 6) for _ in range(shape[0])] if len(shape) == 1 else \
            [nested(shape[1:]) for _ in range(shape[0])]
    return nested([max(1, int(d)) for d in spec["shape"]])


def run_attack(name: str, port: int, pid: int, target: Target, seconds: float, valid: int,
               options: dict[str, Any], process: subprocess.Popen) -> AttackResult:
    body = json.dumps({"inputs": [target.sample]}).encode()
    reset_peak(pid)
    attacker = subprocess.Popen([sys.executable, __file__, "--attacker", name, "--seconds", str(seconds),
                                 "--target", json.dumps(asdict(target)), "--attack-options", json.dumps(options)],
                                stdout=subprocess.PIPE, text=True)
    time.sleep(min(1.0, seconds / 5))  # let the attack take hold before the valid client starts
    latencies, other = valid_client(port, body, valid, max(0.5, seconds - 1.5))
    out, _ = attacker.communicate(timeout=seconds + 90)
    stayed_up = process.poll() is None and _health(port)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else float("nan")
    return AttackResult(name, valid, len(latencies), round(p99, 1), round(peak_rss_mb(pid), 1), stayed_up,
                        json.loads(out.strip().splitlines()[-1]) if out.strip() else {}, dict(other))


def goals_missed(result: AttackResult, budget_mb: float | None) -> list[str]:
    missed = []
    if result.answered_share < 0.99:
        missed.append(f"valid answered {result.valid_answered}/{result.valid_sent}")
    if not result.p99_ms < 1000:
        missed.append(f"p99 {result.p99_ms} ms")
    if budget_mb is not None and not result.peak_rss_mb < budget_mb:
        missed.append(f"peak RSS {result.peak_rss_mb} MB >= budget {budget_mb} MB")
    if not result.stayed_up:
        missed.append("server down")
    unread = sum(result.attacker_saw.get(k, 0) for k in UNREAD)
    if result.attack in WHOLE_REQUESTS and unread:
        missed.append(f"{unread} refused clients read no status")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--seconds", type=float, default=15.0, help="per attack (default 15)")
    parser.add_argument("--valid", type=int, default=200, help="valid requests per attack (default 200)")
    parser.add_argument("--attack", action="append", choices=sorted(ATTACKS), help="default: all")
    parser.add_argument("--quick", action="store_true", help="CI size: 4 s and 40 valid requests per attack")
    parser.add_argument("--memory-budget-mb", type=float, default=512.0,
                        help="the goal for peak RSS (pass the server's --memory-budget-mb after -- too)")
    parser.add_argument("--python", default=sys.executable, help="the server's interpreter")
    parser.add_argument("--cwd", type=Path, default=REPO, help="where the server runs (another checkout: before/after)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--attacker", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--attack-options", default="{}", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args(argv)
    if args.attacker:
        return attacker_main(args)
    if args.model_dir is None:
        parser.error("--model-dir is required")
    extra = [a for a in extra if a != "--"]
    seconds, valid = (4.0, 40) if args.quick else (args.seconds, args.valid)
    names = args.attack or list(ATTACKS)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"hostile-edge-{os.getpid()}.log"
    load_before = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {_cpu()}, {_versions()}, load average {load_before[0]:.2f}",
          flush=True)
    results = []
    with edge_server(args.model_dir, log, extra, args.python, args.cwd) as (port, max_request_bytes, process):
        target = Target(port, max_request_bytes, _sample(port))
        for name in names:
            options = QUICK[name] if args.quick else {}
            result = run_attack(name, port, process.pid, target, seconds, valid, options, process)
            results.append(result)
            _print_row(result, goals_missed(result, args.memory_budget_mb))
            if not result.stayed_up:
                break
            time.sleep(1.0)  # the attack's connections wind down
    missed = {r.attack: goals_missed(r, args.memory_budget_mb) for r in results}
    if args.json:
        args.json.write_text(json.dumps({"cpu": _cpu(), "date": time.strftime("%Y-%m-%d %H:%M"), "seconds": seconds,
                                         "versions": _versions(), "load_average": {"start": load_before[0],
                                                                                  "end": os.getloadavg()[0]},
                                         "budget_mb": args.memory_budget_mb, "server_args": extra,
                                         "results": [{**asdict(r), "goals_missed": missed[r.attack]}
                                                     for r in results]}, indent=2))
    return 1 if any(missed.values()) else 0


def _print_row(result: AttackResult, missed: list[str]) -> None:
    saw = ", ".join(f"{k}x{v}" for k, v in sorted(result.attacker_saw.items()))
    print(f"{result.attack:17} valid {result.valid_answered:3}/{result.valid_sent:<3} p99 {result.p99_ms:7.1f} ms  "
          f"peak RSS {result.peak_rss_mb:6.1f} MB  {'up' if result.stayed_up else 'DOWN'}  attacker saw: {saw}"
          f"{'  other valid: ' + str(result.other_valid) if result.other_valid else ''}"
          f"{'  MISSED: ' + '; '.join(missed) if missed else ''}", flush=True)


def _versions() -> str:
    """Python and the runtime packages of this interpreter (the server's, unless --python says otherwise)."""
    from importlib import metadata

    found = []
    for name in ("numpy", "ai-edge-litert", "onnxruntime"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join([f"Python {sys.version.split()[0]}", *found])


def _cpu() -> str:
    try:
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        return f"{found.group(1).strip() if found else 'unknown'} ({os.cpu_count()} CPUs)"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
