"""How much memory a request may cost the edge server, worked out before it costs it (stdlib only).

- `request_bytes_needed`: the largest body a legal request for this model can have (the default --max-request-bytes);
  `request_bytes_for`: the same from a count of numbers (models taking named tensors, whose shapes are open).
- `parse_cost`: an upper bound on the memory `json.loads` takes for a body, from byte counts (no Python objects built):
  JSON inflates up to ~27x when parsed (`[{},{},...]`), so a body's size alone bounds nothing.
- `MemoryPlan`: the server's memory formula, checked against --memory-budget-mb at startup.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Any

KB = 1024
MB = 1024 * 1024

# Bytes a legal request needs per value, with room for pretty-printing: a float64 repr is at most 24 characters
# ("-1.2345678901234567e-300"), then a comma, and json.dumps(indent=...) a newline and indentation.
BYTES_PER_NUMBER = 32
BYTES_PER_CHAR = 12  # a non-BMP character sent as a \\uXXXX\\uXXXX surrogate pair
REQUEST_SLACK = 64 * KB  # the envelope, brackets, whitespace
REQUEST_HEADROOM = 1.25

# Upper bounds of what json.loads (with an object_pairs_hook) allocates per byte pattern, CPython 3.9-3.13, 64-bit;
# checked against tracemalloc in tests/unit/test_edge_limits.py.
_COST_BASE = 64 * KB  # the parser's own state, object headers
_COST_TEXT = 8  # bytes -> str, then the string values: one non-BMP character makes each character 4 bytes
_COST_VALUE = 40  # a float (24) and its slot in a list (8, over-allocated)
_COST_LIST = 88  # an empty list (56), its slot, over-allocation
_COST_OBJECT = 360  # a dict, the pairs list and its slot
_COST_PAIR = 120  # a (key, value) tuple, the dict entry
_COST_QUOTE = 40  # half of a string's header (each string has two quotes)
PARSE_FACTOR = 10  # a legal body costs at most ~9x its size to parse; bodies costing more are refused
PARSE_SLACK = 1 * MB


def request_bytes_needed(description: dict[str, Any]) -> int:
    """The largest legal request body for a model, from its description (`ServingModel.describe()`), with headroom."""
    per_sample = 0
    for spec in description.get("inputs", []):
        if spec.get("type") == "string":
            per_sample += int(spec.get("max_chars", 1000)) * BYTES_PER_CHAR + 8
        else:
            count = 1
            for dim in spec.get("shape", []):
                count *= max(int(dim), 1)
            per_sample += count * BYTES_PER_NUMBER
    batch = int(description.get("max_batch", 256))
    return int((batch * per_sample + REQUEST_SLACK) * REQUEST_HEADROOM)


def request_bytes_for(numbers: int) -> int:
    """The largest legal body carrying `numbers` values (`ServingModel.max_request_numbers()`), with headroom."""
    return int((numbers * BYTES_PER_NUMBER + REQUEST_SLACK) * REQUEST_HEADROOM)


def parse_limit(max_request_bytes: int) -> int:
    """The most memory one request may cost to parse."""
    return PARSE_FACTOR * max_request_bytes + PARSE_SLACK


# Each byte adds to at most one of the counts below, so no body costs more than this per byte (plus the base):
# bodies short enough that even this bound fits under the limit skip the counting (40 us for a 26 KB body).
_COST_PER_BYTE_BOUND = _COST_TEXT + max(_COST_VALUE, _COST_LIST, _COST_OBJECT, _COST_PAIR, _COST_QUOTE)


def parse_cost_over(body: bytes, limit: int) -> int | None:
    """`parse_cost(body)` when it exceeds `limit`, else None; short bodies are cleared from their length alone."""
    if _COST_BASE + _COST_VALUE + _COST_PER_BYTE_BOUND * len(body) <= limit:
        return None
    cost = parse_cost(body)
    return cost if cost > limit else None


def parse_cost(body: bytes) -> int:
    """An upper bound on the bytes json.loads allocates for `body` (about 1 ms per MB: five byte counts)."""
    values = body.count(b",") + 1
    return (_COST_BASE + _COST_TEXT * len(body) + _COST_VALUE * values + _COST_LIST * body.count(b"[")
            + _COST_OBJECT * body.count(b"{") + _COST_PAIR * body.count(b":") + _COST_QUOTE * body.count(b'"'))


# Per connection: the 64 KB read buffer, the head (at most max_head_bytes, held twice while parsed), the thread's
# touched stack and the handler's objects.
CONNECTION_OVERHEAD = 96 * KB
PLAN_MARGIN = 24 * MB  # allocator fragmentation, the accept loop, logging


@dataclass(frozen=True)
class MemoryPlan:
    """peak RSS <= base + connections x (overhead + head) + body_budget + workers x parse_limit + margin."""

    budget: int
    base: int  # RSS with the models loaded, before serving
    connections: int
    max_head_bytes: int
    workers: int
    max_request_bytes: int

    @property
    def per_connection(self) -> int:
        return CONNECTION_OVERHEAD + 2 * self.max_head_bytes

    @property
    def fixed(self) -> int:
        return (self.base + self.connections * self.per_connection + self.workers * parse_limit(self.max_request_bytes)
                + PLAN_MARGIN)

    @property
    def body_budget(self) -> int:
        """Bytes of request bodies held at once (being read, or waiting for a worker)."""
        # Twice a body per connection at most: connections being let go still hold theirs for a moment.
        return max(0, min(self.budget - self.fixed, 2 * self.connections * self.max_request_bytes))

    def largest_request_bytes(self) -> int:
        """The largest --max-request-bytes these settings can hold within the budget (0 if none)."""
        rest = (self.budget - self.base - self.connections * self.per_connection - self.workers * PARSE_SLACK
                - PLAN_MARGIN)
        return max(0, rest // (self.workers * (PARSE_FACTOR + 1)))

    def problem(self) -> str | None:
        """Why the budget cannot hold these settings, or None."""
        needed = self.fixed + self.workers * self.max_request_bytes
        if needed <= self.budget:
            return None
        return (f"--memory-budget-mb {self.budget // MB} is too small for these settings: the model loaded takes "
                f"{self.base / MB:.0f} MB, {self.connections} connections "
                f"{self.connections * self.per_connection / MB:.0f} MB, parsing {self.workers} request(s) of up to "
                f"{self.max_request_bytes} bytes "
                f"{self.workers * (parse_limit(self.max_request_bytes) + self.max_request_bytes) / MB:.0f} MB; "
                f"at least {-(-needed // MB)} MB is needed (or lower --workers, --max-connections or "
                f"--max-request-bytes)")


def current_rss() -> int:
    """This process's resident set size in bytes (Linux /proc; elsewhere its peak so far)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * KB
