"""The workers' gate: parsing and inference for at most `slots` requests at once, the smallest waiting body first
(stdlib only).

A semaphore would serve waiters in arrival order, so one small request would wait behind every large batch queued
before it; with the smallest first, a client sending one sample waits for at most the requests already running.
A large request waits longer under sustained load of small ones, never longer than `timeout` (then 503).
"""

from __future__ import annotations

import heapq
import itertools
import threading


class Gate:
    def __init__(self, slots: int) -> None:
        self._free = slots
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, int, threading.Event]] = []  # (cost, arrival, wake-up)
        self._arrivals = itertools.count()

    def acquire(self, cost: int, timeout: float) -> bool:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return True
            entry = (cost, next(self._arrivals), threading.Event())
            heapq.heappush(self._waiting, entry)
        if entry[2].wait(timeout):
            return True
        with self._lock:
            if entry[2].is_set():  # handed a slot just as the wait timed out: keep it
                return True
            self._waiting.remove(entry)
            heapq.heapify(self._waiting)
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                heapq.heappop(self._waiting)[2].set()  # the slot passes straight to the smallest waiter
            else:
                self._free += 1
