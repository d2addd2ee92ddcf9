"""Which connections the edge server holds, and which one to let go when a new one needs its slot (stdlib only).

A slot is held from accept to close. When every slot is taken, a new connection takes the slot of an idle
keep-alive connection (the oldest), else of a connection still sending its request: one whose head is incomplete
(the one that started longest ago: a slowloris), else one still uploading its body (the slowest in bytes per
second). That victim comes at once from the client address holding the most such connections when it holds more than
twice as many as the newcomer's address holds still sending (a client with a few requests in flight gets in past a
crowd), else it must
have been at it for `evict_after_s` (so a crowd that keeps reconnecting cannot churn its slots faster than that).
A connection whose request is complete (inference, answer) is never evicted; when no victim is left, the new
connection is refused. One client address may hold at most `per_client`
slots, so one host cannot take them all.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

NEW, HEAD, BODY, BUSY, IDLE = "new", "head", "body", "busy", "idle"


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    client: str
    state: str = NEW
    since: float = field(default_factory=time.monotonic)
    evicted: bool = False
    received: int = 0  # body bytes so far (BODY): the slowest upload goes first


class ConnectionTable:
    def __init__(self, max_connections: int, per_client: int, evict_after_s: float = 1.0) -> None:
        self.max_connections = max_connections
        self.per_client = per_client
        self.evict_after_s = evict_after_s
        self._lock = threading.Lock()
        self._held: set[Connection] = set()
        self._by_client: dict[str, int] = {}
        self.evictions = 0

    def admit(self, sock: socket.socket, client: str) -> Connection | str:
        """A slot for the connection, or why there is none ("per-client" or "full")."""
        victim = None
        with self._lock:
            if self._by_client.get(client, 0) >= self.per_client:
                return "per-client"
            if len(self._held) >= self.max_connections:
                victim = self._victim(client)
                if victim is None:
                    return "full"
                self._drop(victim)
                victim.evicted = True
                self.evictions += 1
            conn = Connection(sock, client)
            self._held.add(conn)
            self._by_client[client] = self._by_client.get(client, 0) + 1
        if victim is not None:
            _hang_up(victim.sock)  # its thread sees end-of-stream and ends
        return conn

    def release(self, conn: Connection) -> None:
        with self._lock:
            if conn in self._held:
                self._drop(conn)

    def set_state(self, conn: Connection, state: str) -> None:
        """Called by the connection's thread; an evicted connection stays evicted."""
        conn.state, conn.since, conn.received = state, time.monotonic(), 0

    def __len__(self) -> int:
        return len(self._held)

    def _victim(self, newcomer: str) -> Connection | None:
        now = time.monotonic()
        idle = [c for c in self._held if c.state == IDLE]
        if idle:
            return min(idle, key=lambda c: c.since)
        sending = [c for c in self._held if c.state in (NEW, HEAD, BODY)]
        if not sending:
            return None
        per_client: dict[str, list[Connection]] = {}
        for conn in sending:
            per_client.setdefault(conn.client, []).append(conn)
        heaviest = max(per_client, key=lambda client: len(per_client[client]))
        # The newcomer's own connections still sending count, not those waiting for their answers: a valid client
        # with a few requests in flight must still get in past a crowd (under a header flood it was refused).
        if len(per_client[heaviest]) > 2 * len(per_client.get(newcomer, ())) + 1:
            return _slowest(per_client[heaviest], now)
        return _slowest([c for c in sending if now - c.since >= self.evict_after_s], now)

    def _drop(self, conn: Connection) -> None:
        self._held.discard(conn)
        left = self._by_client.get(conn.client, 1) - 1
        if left:
            self._by_client[conn.client] = left
        else:
            self._by_client.pop(conn.client, None)


def _hang_up(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _slowest(candidates: list[Connection], now: float) -> Connection | None:
    """The head that started longest ago, else the body arriving slowest."""
    heads = [c for c in candidates if c.state in (NEW, HEAD)]
    if heads:
        return min(heads, key=lambda c: c.since)
    return min(candidates, key=lambda c: c.received / max(now - c.since, 1e-3)) if candidates else None
