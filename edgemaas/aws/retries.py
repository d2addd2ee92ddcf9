"""One retry policy for every AWS call edgemaas makes through `Aws.client`: describes, waiters and paginators too.

It replaces botocore's standard-mode handler on the client's `needs-retry` event (botocore's documented hook) because
a deploy needs more than standard mode offers:

- a larger budget: DEFAULT_ATTEMPTS (8) rather than standard mode's 3 (edgemaas had 5). A deploy is a handful of
  calls made rarely; waiting up to a minute through throttling beats stopping half way. `AWS_MAX_ATTEMPTS` or a
  profile's `max_attempts` still sets it.
- Lambda's "update in progress" conflicts (ResourceConflictException while LastUpdateStatus is InProgress) and IAM's
  propagation delay (a new role "cannot be assumed by Lambda" for some seconds): waiting fixes both.
- waits that grow: exponential backoff with equal jitter (each wait between half and all of min(cap, base * 2^n)),
  so a retry never comes sooner than the one before could have. Throttling starts from 1 s, everything else 0.5 s.

Not retried: "already exists" conflicts, access errors, bad parameters: waiting changes nothing.
"""

from __future__ import annotations

import random
from typing import Any, Callable

DEFAULT_ATTEMPTS = 8
THROTTLE_BASE_S = 1.0
TRANSIENT_BASE_S = 0.5
MAX_DELAY_S = 20.0

THROTTLED = {"TooManyRequestsException", "ThrottlingException", "Throttling", "ThrottledException",
             "RequestThrottledException", "RequestLimitExceeded", "SlowDown", "EC2ThrottledException",
             "ProvisionedThroughputExceededException", "RequestThrottled", "BandwidthLimitExceeded"}
TRANSIENT_CODES = {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "ServiceException",
                   "ServiceUnavailable", "InternalError", "InternalFailure"}
CONFLICT = {"ResourceConflictException", "ResourceInUseException"}
CONCURRENT = {"ConcurrentModification", "ConcurrentModificationException", "OperationAborted"}
# Words of a conflict that passes: Lambda's "The operation cannot be performed at this time. An update is in
# progress for resource: ...", "... concurrent update operation", a function still Pending.
BUSY_WORDS = ("in progress", "at this time", "concurrent", "pending")
# IAM is eventually consistent: a role made seconds ago cannot be assumed by Lambda yet.
ROLE_NOT_READY = "cannot be assumed by lambda"


def backoff(retry: int, base: float, cap: float = MAX_DELAY_S, rand: Callable[[], float] = random.random) -> float:
    """The wait before retry number `retry` (1-based): between half and all of min(cap, base * 2^(retry-1))."""
    ceiling = min(cap, base * 2 ** (retry - 1))
    return ceiling / 2 + rand() * ceiling / 2


def reason(code: str, status: int, message: str) -> str | None:
    """Why waiting may fix an error response ("throttled", "server error", "busy", "role not ready"), or None."""
    if code in THROTTLED or status == 429:
        return "throttled"
    if code in TRANSIENT_CODES or status >= 500:
        return "server error"
    lowered = message.lower()
    if code in CONCURRENT:
        return "busy"
    if code in CONFLICT and any(word in lowered for word in BUSY_WORDS):
        return "busy"
    if code == "InvalidParameterValueException" and ROLE_NOT_READY in lowered:
        return "role not ready"
    return None


def connection_reason(exc: BaseException | None) -> str | None:
    """A connection that failed or dropped (the call may or may not have reached AWS): worth another try."""
    from botocore.exceptions import ConnectionError, HTTPClientError

    return "connection" if isinstance(exc, (ConnectionError, HTTPClientError)) else None


class Retries:
    """A `needs-retry` handler: returns the seconds to wait before the next attempt, or None to stop."""

    def __init__(self, attempts: int = DEFAULT_ATTEMPTS, rand: Callable[[], float] = random.random) -> None:
        self.attempts = max(1, attempts)
        self.rand = rand

    def __call__(self, response: Any = None, attempts: int = 1, caught_exception: BaseException | None = None,
                 **_: Any) -> float | None:
        if response is not None:
            http, parsed = response
            error = parsed.get("Error") or {}
            why = reason(str(error.get("Code") or ""), http.status_code, str(error.get("Message") or "")) \
                if http.status_code >= 300 else None
        else:
            parsed, why = None, connection_reason(caught_exception)
        if why is None:
            return None
        if attempts >= self.attempts:
            if parsed is not None:  # botocore then says "(reached max retries: N)"
                parsed.setdefault("ResponseMetadata", {})["MaxAttemptsReached"] = True
            return None
        return backoff(attempts, THROTTLE_BASE_S if why == "throttled" else TRANSIENT_BASE_S, rand=self.rand)


def install(client: Any, attempts: int | None = None) -> Any:
    """Put `Retries` in place of the client's botocore retry handler. `attempts`: default the client's configured
    max attempts (AWS_MAX_ATTEMPTS, a profile's max_attempts) if any, else DEFAULT_ATTEMPTS."""
    service = client.meta.service_model.service_id.hyphenize()
    configured = (client.meta.config.retries or {}).get("total_max_attempts")
    client.meta.events.unregister(f"needs-retry.{service}", unique_id=f"retry-config-{service}")
    client.meta.events.register(f"needs-retry.{service}", Retries(attempts or configured or DEFAULT_ATTEMPTS),
                                unique_id=f"edgemaas-retries-{service}")
    return client
