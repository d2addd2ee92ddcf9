"""Refusing a connection so that the client can read the refusal (stdlib only).

Closing a socket with unread bytes in it resets the connection; a client still sending its body (http.client,
requests and curl all send the whole request before reading) then gets a broken pipe instead of the 503. So a
refusal answers at once, then reads and drops the request (its head, then Content-Length bytes) for a short
deadline, and only then closes.
"""

from __future__ import annotations

import re
import socket
import time

_LENGTH = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*(\d{1,18})[ \t]*\r?$")
_CHUNKED = re.compile(rb"(?im)^transfer-encoding[ \t]*:")


def response_bytes(status_line: str, text: str, retry_after: int | None = 1) -> bytes:
    body = text.encode()
    retry = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    return (f"HTTP/1.1 {status_line}\r\nServer: edgemaas-edge\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{retry}Connection: close\r\n\r\n").encode() + body


def refuse(sock: socket.socket, response: bytes, max_head_bytes: int, max_body_bytes: int,
           deadline_s: float) -> None:
    """Answer, then drain what the client sends of its request (at most the head and one body) until `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    try:
        sock.settimeout(deadline_s)
        sock.sendall(response)
        sock.shutdown(socket.SHUT_WR)
        head = bytearray()
        budget = max_head_bytes
        while b"\r\n\r\n" not in head and len(head) < max_head_bytes:
            chunk = _recv(sock, deadline, max_head_bytes - len(head))
            if not chunk:
                return
            head += chunk
        ended = head.find(b"\r\n\r\n")
        found = _LENGTH.search(head, 0, ended if ended >= 0 else len(head))
        chunked = _CHUNKED.search(head, 0, ended if ended >= 0 else len(head)) is not None
        if chunked:
            budget = max_body_bytes  # no length: drop what comes until the deadline
        else:
            budget = min(int(found.group(1)), max_body_bytes) if found else 0
            budget -= len(head) - (ended + 4) if ended >= 0 else 0
        while budget > 0:
            chunk = _recv(sock, deadline, min(budget, 1 << 16))
            if not chunk:
                return
            budget -= len(chunk)
    except OSError:
        pass


def _recv(sock: socket.socket, deadline: float, size: int) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        return b""
    sock.settimeout(left)
    try:
        return sock.recv(size)
    except TimeoutError:
        return b""
