"""Adaptive micro-batching for the edge server (stdlib + numpy only).

Concurrent `POST /predict` requests in the batch form are prepared (validated, preprocessed) on their connection's
thread, queued, and run by a worker as one batch through one interpreter call; each request gets its own rows back
and formats its own answer. A worker waits for more requests only while others are still being prepared, and at
most `max_wait_s`: a lone client never waits. Everything else the server must run on a model (the tensor form, the
Open Inference Protocol, a request that did not prepare: its error) is a *call* job: the worker runs
`Service.dispatch` on its own replica, so the answer and the error are the service's, byte for byte.

Every worker owns one model replica (wrapped in its own single-replica Service), so no interpreter is ever used by
two threads. The jobs in the batcher (queued or running) are bounded by `max_queue`: one more is refused at once
(the server answers 503), and a job still queued after the queue timeout is dropped (503 too).

A free worker takes the queued job with the smallest body first (arrival order among equals), as the gate does
(gate.py): a client sending one sample waits for the batches already running, not for every large batch queued
before it (measured under 16 parallel clients posting 256-sample batches: the valid client's p99 went from 689 ms
with a first-come queue to the figure in docs/benchmarks.md). A large job waits longer under a sustained stream of
small ones, never longer than the queue timeout (then 503).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

import numpy as np

from ..runtime.model import BATCH, ServingModel
from ..runtime.service import Reply, Service

QUEUED, RUNNING, DONE, CANCELLED = range(4)


class Job:
    __slots__ = ("arrays", "count", "key", "call", "result", "error", "state", "done", "notify", "cost")

    def __init__(self, arrays: list[np.ndarray] | None, call: Callable[[Service], Reply] | None,
                 notify: Callable[["Job"], None] | None = None, cost: int = 0) -> None:
        self.arrays = arrays
        self.count = int(arrays[0].shape[0]) if arrays else 0
        self.key = tuple((a.shape[1:], a.dtype.str) for a in arrays) if arrays else None
        self.call = call
        self.result: Any = None
        self.error: BaseException | None = None
        self.state = QUEUED
        self.done = threading.Event()
        self.notify = notify  # called by the worker once the job is done (the event loop's wake-up)
        self.cost = cost  # the request body's bytes: the smallest queued job runs first


def batchable(model: ServingModel) -> bool:
    """A model whose one batch-form input has a dynamic batch dimension (a fixed batch, like a frozen recurrent
    model's, gains nothing: the backend runs it in chunks of that size anyway)."""
    inputs = model.backend.inputs
    return BATCH in model.forms and len(inputs) == 1 and bool(inputs[0].shape) and inputs[0].shape[0] == -1


class Batcher:
    def __init__(self, services: list[Service], max_batch: int, max_wait_s: float, max_queue: int) -> None:
        self.services = services
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._pending = 0  # jobs queued or running
        self._arriving = 0  # requests being prepared on their threads: a worker may wait for them
        self._collecting = 0  # workers waiting for those requests
        self._closed = False
        self.batches = 0  # batches run, and the most samples in one (for tests and the log)
        self.largest_batch = 0
        self._threads = [threading.Thread(target=self._work, args=(s,), daemon=True, name=f"batch-worker-{i}")
                         for i, s in enumerate(services)]
        for thread in self._threads:
            thread.start()

    # -- the connection threads' side ---------------------------------------------------------------------------

    def arriving(self, delta: int) -> None:
        with self._cond:
            self._arriving += delta
            if not self._arriving and self._collecting:
                # The last request being prepared was queued (or refused): a worker waiting for it stops waiting.
                # Without this a lone request, queued while still counted as arriving, waited the whole max_wait.
                self._cond.notify_all()

    def submit(self, job: Job) -> bool:
        """Queue a job; False (nothing queued) when `max_queue` jobs are already in the batcher."""
        with self._cond:
            if self._pending >= self.max_queue or self._closed:
                return False
            self._pending += 1
            self._queue.append(job)
            self._cond.notify()
            return True

    def wait(self, job: Job, queue_timeout_s: float) -> bool:
        """Wait for a job to finish; False when it was still queued after `queue_timeout_s` (it is dropped)."""
        if job.done.wait(queue_timeout_s):
            return True
        with self._cond:
            if job.state == QUEUED:
                job.state = CANCELLED
                self._queue.remove(job)
                self._pending -= 1
                return False
        job.done.wait()  # running: a batch takes milliseconds, a call job is bounded by the service's own limits
        return True

    def cancel(self, job: Job) -> bool:
        """Drop a job still queued (True); False when a worker already has it (it will finish)."""
        with self._cond:
            if job.state != QUEUED:
                return False
            job.state = CANCELLED
            self._queue.remove(job)
            self._pending -= 1
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- the workers ------------------------------------------------------------------------------------------------

    def _work(self, service: Service) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                first = _smallest(self._queue)
                first.state = RUNNING
                jobs = [first] if first.call is not None else self._collect(first)
                if first.call is None:
                    self.batches += 1
                    self.largest_batch = max(self.largest_batch, sum(job.count for job in jobs))
            try:
                if first.call is not None:
                    self._run_call(service, first)
                else:
                    self._run_batch(service.model, jobs)
            finally:
                with self._cond:
                    self._pending -= len(jobs)
                for job in jobs:
                    job.state = DONE
                    job.done.set()
                    if job.notify is not None:
                        job.notify(job)

    def _collect(self, first: Job) -> list[Job]:
        """Under the lock: `first` plus queued batch jobs of the same shape, up to `max_batch` samples, waiting for
        requests still being prepared for at most `max_wait_s`."""
        jobs, count = [first], first.count
        deadline = time.monotonic() + self.max_wait_s
        while count < self.max_batch:
            for job in list(self._queue):
                if job.call is None and job.key == first.key and count + job.count <= self.max_batch:
                    self._queue.remove(job)
                    job.state = RUNNING
                    jobs.append(job)
                    count += job.count
            remaining = deadline - time.monotonic()
            if count >= self.max_batch or not self._arriving or remaining <= 0:
                break
            self._collecting += 1
            try:
                self._cond.wait(remaining)
            finally:
                self._collecting -= 1
        return jobs

    @staticmethod
    def _run_call(service: Service, job: Job) -> None:
        try:
            job.result = job.call(service)  # type: ignore[misc]
        except BaseException as exc:  # MemoryError above all: the connection's thread answers it
            job.error = exc

    @staticmethod
    def _run_batch(model: ServingModel, jobs: list[Job]) -> None:
        try:
            if len(jobs) == 1:
                outputs = model.infer(jobs[0].arrays)  # type: ignore[arg-type]
            else:
                arrays = [np.concatenate(parts) for parts in zip(*(job.arrays for job in jobs))]  # type: ignore
                outputs = model.infer(arrays)
        except BaseException as exc:  # each request then runs alone, for its own answer or error
            for job in jobs:
                job.error = exc
            return
        start = 0
        for job in jobs:
            job.result = [out[start:start + job.count] for out in outputs]
            start += job.count


def _smallest(queue: collections.deque[Job]) -> Job:
    """Remove and return the queued job with the smallest cost, the earliest among equals (min keeps the first)."""
    job = queue[0]
    for other in queue:
        if other.cost < job.cost:
            job = other
    if job is queue[0]:
        queue.popleft()
    else:
        queue.remove(job)
    return job
