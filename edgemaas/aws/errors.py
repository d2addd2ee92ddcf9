"""boto errors, said the way a user can act on them; and per-call retries for clients without `retries.install`."""

from __future__ import annotations

import json
import re
import time
from typing import Callable, TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from edgemaas.errors import UserError
from edgemaas.aws import retries
from edgemaas.aws.retries import CONFLICT, THROTTLED

T = TypeVar("T")

NO_CREDENTIALS = ("no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                  "pass --profile, or run aws configure")
NO_REGION = "no AWS region: pass --region, set AWS_REGION (or AWS_DEFAULT_REGION), or run aws configure"
RERUN = "run the same command again"
ACCESS_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
CREDENTIAL_CODES = {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "ExpiredToken",
                    "ExpiredTokenException", "InvalidAccessKeyId", "InvalidSignatureException"}
# AWS says which action was refused and who asked: "User: arn:aws:iam::123456789012:user/ci is not authorized to
# perform: iam:PassRole on resource: ..."
_REFUSED = re.compile(r"not authorized to perform:?\s+([A-Za-z0-9-]+:[A-Za-z0-9*]+)")
_CALLER = re.compile(r"arn:(aws[a-z-]*):(?:iam|sts)::(\d{12}):[\w+=,.@/-]+")
_RESOURCE_REGION = re.compile(r"on resource: arn:[a-z-]+:[a-z0-9-]+:([a-z0-9-]+):")


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def status_code(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return 0


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "") or "")


def retryable(exc: BaseException) -> bool:
    """Throttling, a conflicting update in progress, a role not propagated yet, or a 5xx: waiting may fix it."""
    return retries.reason(error_code(exc), status_code(exc), _message(exc) if isinstance(exc, ClientError) else "") \
        is not None


def with_retries(call: Callable[[], T], attempts: int = retries.DEFAULT_ATTEMPTS,
                 base_delay: float = retries.TRANSIENT_BASE_S, sleep: Callable[[float], None] = time.sleep) -> T:
    """Run call, retrying what `retryable` says with `retries.backoff` (for clients whose own retries are off)."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except ClientError as exc:
            if attempt == attempts or not retryable(exc):
                # Our retries, not botocore's: record them where the error message reads the attempt count.
                exc.response.setdefault("ResponseMetadata", {})["RetryAttempts"] = attempt - 1
                raise
            sleep(retries.backoff(attempt, base_delay))
    raise AssertionError("unreachable")


def translate(exc: BaseException, rerun: str = RERUN) -> UserError | None:
    """A UserError for the AWS errors a user can act on, else None. `rerun` says how to pick up where it stopped."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return UserError(NO_CREDENTIALS)
    if isinstance(exc, NoRegionError):
        return UserError(NO_REGION)
    if isinstance(exc, ProfileNotFound):
        return UserError(f"{exc}: check --profile / AWS_PROFILE against ~/.aws/config")
    if isinstance(exc, EndpointConnectionError):
        return UserError(f"cannot reach AWS: {exc}; check the network (or AWS_ENDPOINT_URL), then {rerun}")
    if isinstance(exc, (ConnectionClosedError, ReadTimeoutError)):
        return UserError(f"lost the connection to AWS ({exc}) after retrying; {rerun}")
    if not isinstance(exc, ClientError):
        return None
    code = error_code(exc)
    operation = getattr(exc, "operation_name", "") or "the call"
    message = _message(exc) or str(exc)
    if code in ACCESS_CODES or status_code(exc) == 403 and code not in CREDENTIAL_CODES:
        return access_denied(exc)
    if code in CREDENTIAL_CODES:
        return UserError(f"AWS rejected the credentials ({code}: {message}); refresh them (aws sso login, aws "
                         "configure) or check AWS_PROFILE")
    attempts = _attempts(exc)
    if code in THROTTLED or status_code(exc) == 429:
        return UserError(f"AWS kept throttling {operation} ({attempts}: {message}). Wait a minute, then {rerun} "
                         "(AWS_MAX_ATTEMPTS allows more retries)")
    if code in CONFLICT and retries.reason(code, status_code(exc), message):
        return UserError(f"{operation}: an earlier update was still in progress ({attempts}: {message}). Wait a "
                         f"minute, then {rerun}")
    if status_code(exc) >= 500:
        return UserError(f"AWS failed {operation} with {code or status_code(exc)} ({attempts}: {message}); "
                         f"{rerun}")
    return UserError(f"{operation} failed: {code}: {message}")


def _attempts(exc: ClientError) -> str:
    retried = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
    return f"{retried + 1} attempts" if isinstance(retried, int) else "after retries"


def refused_action(exc: ClientError) -> str:
    """The IAM action AWS refused: from its message when it names one, else the action the operation needs."""
    found = _REFUSED.search(str(exc)) or _REFUSED.search(_message(exc))
    return found.group(1) if found else iam_action(exc)


def access_denied(exc: ClientError) -> UserError:
    """Which action was refused, to whom, and the statement of the minimal deploy policy that allows it."""
    from edgemaas.aws.policy import deploy_policy, statement_for

    action = refused_action(exc)
    operation = getattr(exc, "operation_name", "") or "?"
    caller = _CALLER.search(str(exc))
    partition, account = (caller.group(1), caller.group(2)) if caller else ("aws", "*")
    resource = _RESOURCE_REGION.search(str(exc))
    region = resource.group(1) if resource and resource.group(1) else "*"
    statement = statement_for(action, deploy_policy(account=account, region=region, partition=partition))
    who = f"your AWS identity ({caller.group(0)})" if caller else "your AWS identity"
    head = f"access denied: {who} may not call {action} (needed by {operation})."
    if statement is None:
        return UserError(f"{head} Attach a policy that allows {action}.")
    return UserError(f"{head} Add this statement to its IAM policy, or attach the whole minimal policy that "
                     f"`edgemaas deploy-policy` prints:\n{json.dumps(statement)}")


_IAM_OPS = {"GetRole", "CreateRole", "DeleteRole", "GetRolePolicy", "PutRolePolicy", "DeleteRolePolicy",
            "ListRolePolicies", "ListAttachedRolePolicies", "TagRole"}
_S3_ACTIONS = {"HeadBucket": "ListBucket", "HeadObject": "GetObject", "CreateBucket": "CreateBucket",
               "PutObject": "PutObject", "GetObject": "GetObject", "CreateMultipartUpload": "PutObject",
               "UploadPart": "PutObject", "CompleteMultipartUpload": "PutObject"}
# Lambda operations whose IAM action has another name.
_LAMBDA_ACTIONS = {"Invoke": "InvokeFunction", "InvokeWithResponseStream": "InvokeFunction",
                   "ListLayerVersions": "ListLayerVersions"}


def _service(exc: ClientError) -> str:
    operation = getattr(exc, "operation_name", "")
    if operation in _IAM_OPS:
        return "iam"
    if operation in _S3_ACTIONS:
        return "s3"
    if operation == "GetCallerIdentity":
        return "sts"
    return "lambda" if operation else ""


def iam_action(exc: ClientError) -> str:
    """The IAM action an operation needs, e.g. lambda:CreateFunction, s3:PutObject."""
    operation = getattr(exc, "operation_name", "") or "?"
    service = _service(exc)
    if service == "s3":
        return f"s3:{_S3_ACTIONS[operation]}"
    if service == "lambda":
        operation = operation.rstrip("0123456789").removesuffix("_")  # e.g. CreateFunction20150331 → CreateFunction
        operation = _LAMBDA_ACTIONS.get(operation, operation)
    return f"{service}:{operation}" if service else operation
