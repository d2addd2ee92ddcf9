"""The edge server's limits as parts: the parse-cost bound against what json.loads really allocates, the default
request size against the largest legal request, the memory plan, the connection table's choice of whom to let go,
the deadline reader and the refuser (real sockets, in process)."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import tracemalloc

import pytest

from edgemaas.edge_entry.connections import BODY, BUSY, HEAD, IDLE, ConnectionTable
from edgemaas.edge_entry.deadline_io import DeadlineExceeded, DeadlineReader
from edgemaas.edge_entry.gate import Gate
from edgemaas.edge_entry.limits import (MB, MemoryPlan, parse_cost, parse_cost_over, parse_limit,
                                        request_bytes_for, request_bytes_needed)
from edgemaas.edge_entry.refusal import Refuser, response_bytes
from edgemaas.runtime.service import parse_body

N = 100_000
HOSTILE = {
    "empty objects": b"[" + b",".join([b"{}"] * N) + b"]",
    "empty lists": b"[" + b",".join([b"[]"] * N) + b"]",
    "nested lists": b"[" + b",".join([b"[[0]]"] * N) + b"]",
    "empty strings": b"[" + b",".join([b'""'] * N) + b"]",
    "small ints": b"[" + b",".join([b"0"] * N) + b"]",
    "floats": b"[" + b",".join([b"1e5"] * N) + b"]",
    "keys": b"{" + b",".join(b'"%d":0' % i for i in range(N)) + b"}",
    "one-key objects": b"[" + b",".join([b'{"a":0}'] * N) + b"]",
    "one emoji in ASCII": ('{"inputs": ["' + "a" * N + '\U0001F600"]}').encode(),
    "literals": b"[" + b",".join([b"true", b"null"] * (N // 2)) + b"]",
}
CNN = {"inputs": [{"name": "image", "type": "number", "shape": [8, 8]}], "max_batch": 256}
TEXT = {"inputs": [{"name": "text", "type": "string", "max_chars": 1000}], "max_batch": 256}


def _parse_peak(body: bytes) -> int:
    tracemalloc.start()
    try:
        parsed = parse_body(body, max_bytes=1 << 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del parsed
    return peak


@pytest.mark.parametrize("name", HOSTILE)
def test_parse_cost_bounds_what_parsing_allocates(name: str) -> None:
    body = HOSTILE[name]
    assert parse_cost(body) >= _parse_peak(body)


@pytest.mark.parametrize("name", HOSTILE)
def test_parse_cost_over_gives_the_same_verdict_as_counting(name: str) -> None:
    """The shortcut clears short bodies from their length alone; at and around every body's own cost, and for
    its prefixes, it refuses exactly what parse_cost refuses."""
    body = HOSTILE[name]
    for part in (body, body[:1000], body[:50], b"{}"):
        cost = parse_cost(part)
        for limit in (cost - 1, cost, cost + 1, cost // 2, 10 * cost, 1 << 30):
            assert parse_cost_over(part, limit) == (cost if cost > limit else None)


def test_the_largest_legal_requests_fit_the_default_limits() -> None:
    rng = random.Random(0)
    # Full-precision floats, pretty-printed: the most bytes a legal cnn request can take.
    batch = [[[rng.uniform(-1e-300, -1e-299) for _ in range(8)] for _ in range(8)] for _ in range(256)]
    body = json.dumps({"inputs": batch}, indent=1).encode()
    limit = request_bytes_needed(CNN)
    assert len(body) <= limit
    assert parse_cost(body) <= parse_limit(limit)
    # Text: every sample at the character limit, each character a \\u escaped surrogate pair.
    body = json.dumps({"inputs": ["\U0001F600" * 1000] * 256}).encode()
    limit = request_bytes_needed(TEXT)
    assert len(body) <= limit
    assert parse_cost(body) <= parse_limit(limit)


def test_the_largest_legal_tensor_request_fits_its_default_limit() -> None:
    # A model taking named tensors with open shapes: its element limit, as full-precision floats, pretty-printed,
    # split over two inputs of any shape, plus the scalar it also takes.
    rng = random.Random(0)
    elements = 10_000
    audio = [[rng.uniform(-1e-300, -1e-299) for _ in range(elements // 2)]]
    state = [[[rng.uniform(-1e-300, -1e-299) for _ in range(elements // 4)] for _ in range(2)]]
    body = json.dumps({"inputs": {"input": audio, "state": state, "sr": 16000}}, indent=1).encode()
    limit = request_bytes_for(elements)
    assert len(body) <= limit
    assert parse_cost(body) <= parse_limit(limit)
    # The same count through the batch form's arithmetic gives the same limit (one formula, two ways in).
    assert request_bytes_for(256 * 64) == request_bytes_needed(CNN)


def test_json_amplification_at_the_limit_is_over_the_parse_limit() -> None:
    limit = request_bytes_needed(CNN)
    body = b"[" + b",".join([b"{}"] * ((limit - 2) // 3)) + b"]"
    assert len(body) <= limit < parse_cost(body) / 10
    assert parse_cost(body) > parse_limit(limit)


def test_memory_plan() -> None:
    plan = MemoryPlan(budget=512 * MB, base=60 * MB, connections=128, max_head_bytes=64 * 1024, workers=2,
                      max_request_bytes=737_280)
    assert plan.problem() is None
    assert plan.body_budget == 2 * 128 * 737_280  # room for every connection's body twice: capped there
    assert plan.fixed + plan.body_budget <= plan.budget
    small = MemoryPlan(budget=64 * MB, base=60 * MB, connections=128, max_head_bytes=64 * 1024, workers=2,
                       max_request_bytes=737_280)
    problem = small.problem()
    assert problem and problem.startswith("--memory-budget-mb 64 is too small") and "MB is needed" in problem


def _sockets(n: int) -> list[socket.socket]:
    return [socket.socket() for _ in range(n)]


def test_table_lets_an_idle_keep_alive_connection_go_first() -> None:
    table = ConnectionTable(max_connections=3, per_client=3)
    a, b, c = (table.admit(s, "10.0.0.1") for s in _sockets(3))
    table.set_state(a, HEAD)
    table.set_state(b, IDLE)
    table.set_state(c, BUSY)
    newcomer = table.admit(socket.socket(), "10.0.0.2")
    assert not isinstance(newcomer, str) and b.evicted and not a.evicted and len(table) == 3


def test_table_takes_slots_from_the_address_holding_most_not_from_a_newcomer() -> None:
    table = ConnectionTable(max_connections=4, per_client=4, evict_after_s=60)
    attackers = [table.admit(s, "10.0.0.9") for s in _sockets(3)]
    mine = table.admit(socket.socket(), "10.0.0.1")
    for conn in (*attackers, mine):
        table.set_state(conn, HEAD)
    # The attacker's own reconnection: its address holds the most, so it must wait for evict_after_s: refused.
    assert table.admit(socket.socket(), "10.0.0.9") == "full"
    # A newcomer from another address takes the slot of the attacker's oldest head, young as it is.
    assert not isinstance(table.admit(socket.socket(), "10.0.0.2"), str)
    assert attackers[0].evicted and not mine.evicted


def test_table_never_evicts_a_complete_request_and_caps_each_address() -> None:
    table = ConnectionTable(max_connections=2, per_client=1, evict_after_s=0)
    first = table.admit(socket.socket(), "10.0.0.1")
    assert table.admit(socket.socket(), "10.0.0.1") == "per-client"
    second = table.admit(socket.socket(), "10.0.0.2")
    table.set_state(first, BUSY)
    table.set_state(second, BUSY)
    assert table.admit(socket.socket(), "10.0.0.3") == "full"
    table.set_state(second, BODY)  # still uploading: evictable, the slowest first
    assert not isinstance(table.admit(socket.socket(), "10.0.0.3"), str) and second.evicted
    table.release(first)
    assert len(table) == 1


def test_deadline_reader_holds_a_deadline_however_the_bytes_trickle() -> None:
    server, client = socket.socketpair()
    with server, client:
        reader = DeadlineReader(server, timeout=5.0)
        reader.deadline = time.monotonic() + 0.6
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.1):
                client.send(b"x")
        thread = threading.Thread(target=trickle)
        thread.start()
        started = time.monotonic()
        buffer = bytearray(1)
        try:
            with pytest.raises(DeadlineExceeded):
                while True:
                    reader.readinto(buffer)
        finally:
            stop.set()
            thread.join()
        assert 0.5 < time.monotonic() - started < 1.5  # each read was well inside the 5 s timeout


def test_deadline_reader_hands_out_its_prefix_before_reading_the_socket() -> None:
    """The event loop hands a connection to a thread with the bytes it already read: those come first."""
    server, client = socket.socketpair()
    with server, client:
        reader = DeadlineReader(server, timeout=5.0, prefix=b"POST / HT")
        client.send(b"TP/1.1\r\n")
        buffer = bytearray(4)
        got = b""
        while not got.endswith(b"\r\n"):
            n = reader.readinto(buffer)
            got += bytes(buffer[:n])
        assert got == b"POST / HTTP/1.1\r\n"


def test_refuser_answers_then_drains_the_whole_request() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    refuser = Refuser(max_head_bytes=65536, max_body_bytes=8 * MB, deadline_s=5)
    body = b"x" * (2 * MB)
    got: dict[str, bytes] = {}

    def client() -> None:
        with socket.create_connection(listener.getsockname()) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            got["reply"] = data

    thread = threading.Thread(target=client)
    thread.start()
    conn, _ = listener.accept()
    refuser.refuse(conn, response_bytes("503 Service Unavailable", '{"error": "busy"}'))
    thread.join(10)
    refuser.close()
    listener.close()
    assert got["reply"].startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in got["reply"]


def test_gate_serves_the_smallest_waiting_body_first_and_times_out() -> None:
    gate = Gate(1)
    assert gate.acquire(10, timeout=0)
    order: list[int] = []

    def wait(cost: int) -> None:
        if gate.acquire(cost, timeout=5):
            order.append(cost)
            gate.release()

    threads = [threading.Thread(target=wait, args=(cost,)) for cost in (900, 500, 1)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # arrival order: the largest first
    gate.release()
    for thread in threads:
        thread.join(5)
    assert order == [1, 500, 900]
    assert gate.acquire(1, timeout=0)
    started = time.monotonic()
    assert not gate.acquire(1, timeout=0.2) and time.monotonic() - started >= 0.2


def test_table_lets_a_newcomer_with_requests_in_flight_past_a_crowd() -> None:
    """A valid client with answers pending (BUSY) still takes a crowd's slot at once: only its connections still
    sending count against it (before: all it held, so under a header flood it was refused "full")."""
    table = ConnectionTable(max_connections=8, per_client=8, evict_after_s=60)
    crowd = [table.admit(s, "10.0.0.9") for s in _sockets(5)]
    mine = [table.admit(s, "10.0.0.1") for s in _sockets(3)]
    for conn in crowd:
        table.set_state(conn, HEAD)
    for conn in mine:
        table.set_state(conn, BUSY)  # three requests of the valid client waiting for their answers
    assert not isinstance(table.admit(socket.socket(), "10.0.0.1"), str)
    assert crowd[0].evicted and not any(conn.evicted for conn in mine)
    # A client with as many connections still sending as the crowd has to wait for evict_after_s, as before.
    for conn in mine:
        table.set_state(conn, HEAD)
    assert table.admit(socket.socket(), "10.0.0.1") == "full"


class _Replica:
    """Stands in for a worker's Service: call jobs get it, and never touch a model."""


def test_batcher_runs_the_smallest_queued_job_first() -> None:
    """A one-sample request queued behind large batches runs before them (arrival order among equals)."""
    from edgemaas.edge_entry.batching import Batcher, Job

    batcher = Batcher([_Replica()], max_batch=32, max_wait_s=0, max_queue=16)  # type: ignore[list-item]
    release = threading.Event()
    order: list[str] = []
    blocker = Job(None, lambda service: release.wait(5), cost=0)
    assert batcher.submit(blocker)
    deadline = time.monotonic() + 5
    while blocker.state == 0 and time.monotonic() < deadline:  # QUEUED until the worker holds it
        time.sleep(0.01)

    def job(name: str, cost: int) -> Job:
        return Job(None, lambda service: order.append(name), cost=cost)

    jobs = [job("large-1", 100_000), job("large-2", 100_000), job("small", 300), job("medium", 5_000),
            job("small-later", 300)]
    for queued in jobs:
        assert batcher.submit(queued)
    release.set()
    for queued in jobs:
        assert batcher.wait(queued, 5)
    batcher.close()
    assert order == ["small", "small-later", "medium", "large-1", "large-2"]


def test_memory_plan_largest_request_fits_the_budget_and_one_byte_more_does_not() -> None:
    plan = MemoryPlan(budget=512 * MB, base=96 * MB, connections=128, max_head_bytes=64 * 1024, workers=2,
                      max_request_bytes=167_854_080)  # a tensor model's element limit: 3.6 GB of plan
    assert plan.problem() is not None
    fitted = plan.largest_request_bytes()
    assert 1 * MB < fitted < 167_854_080
    assert MemoryPlan(**{**plan.__dict__, "max_request_bytes": fitted}).problem() is None
    assert MemoryPlan(**{**plan.__dict__, "max_request_bytes": fitted + 1}).problem() is not None
    assert MemoryPlan(**{**plan.__dict__, "budget": 64 * MB}).largest_request_bytes() == 0
