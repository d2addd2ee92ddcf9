"""boto errors, said the way a user can act on them; and retries for what waiting fixes (conflicts, throttling)."""

from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

from botocore.exceptions import (ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError,
                                 PartialCredentialsError, ProfileNotFound)

from ..errors import UserError

T = TypeVar("T")

NO_CREDENTIALS = ("no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                  "pass --profile, or run aws configure")
NO_REGION = "no AWS region: pass --region, set AWS_REGION (or AWS_DEFAULT_REGION), or run aws configure"
THROTTLED = {"TooManyRequestsException", "ThrottlingException", "Throttling", "ThrottledException",
             "RequestLimitExceeded", "SlowDown", "EC2ThrottledException"}
CONFLICT = {"ResourceConflictException", "ResourceInUseException"}
# IAM is eventually consistent: a role made seconds ago cannot be assumed by Lambda yet.
ROLE_NOT_READY = "cannot be assumed by Lambda"

# The managed policy (or actions) a user needs for what edgemaas calls, by service prefix.
_POLICY_FOR = {
    "lambda": "AWSLambda_FullAccess (or lambda:* on arn:aws:lambda:*:*:function:edgemaas-* and layer:edgemaas-*)",
    "iam": "iam:GetRole, iam:CreateRole, iam:GetRolePolicy, iam:PutRolePolicy and iam:PassRole on the "
           "edgemaas-lambda-role role (IAMFullAccess is broader than needed)",
    "s3": "s3:CreateBucket, s3:PutObject and s3:GetObject on the deployment bucket (AmazonS3FullAccess is broader)",
    "sts": "sts:GetCallerIdentity (allowed to every identity unless an SCP denies it)",
}


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def status_code(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return 0


def retryable(exc: BaseException) -> bool:
    """Throttling, a conflicting update in progress, a role not propagated yet, or a 5xx: waiting may fix it."""
    code = error_code(exc)
    message = str(exc)
    return (code in THROTTLED or code in CONFLICT or status_code(exc) >= 500
            or (code == "InvalidParameterValueException" and ROLE_NOT_READY in message))


def with_retries(call: Callable[[], T], attempts: int = 8, base_delay: float = 0.5, max_delay: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Run call, retrying retryable errors with exponential backoff and full jitter."""
    for attempt in range(attempts):
        try:
            return call()
        except ClientError as exc:
            if attempt == attempts - 1 or not retryable(exc):
                raise
            sleep(random.uniform(0, min(max_delay, base_delay * 2 ** attempt)) + base_delay / 2)
    raise AssertionError("unreachable")


def translate(exc: BaseException) -> UserError | None:
    """A UserError for the AWS errors a user can act on, else None."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return UserError(NO_CREDENTIALS)
    if isinstance(exc, NoRegionError):
        return UserError(NO_REGION)
    if isinstance(exc, ProfileNotFound):
        return UserError(f"{exc}: check --profile / AWS_PROFILE against ~/.aws/config")
    if isinstance(exc, EndpointConnectionError):
        return UserError(f"cannot reach AWS: {exc}")
    if not isinstance(exc, ClientError):
        return None
    code = error_code(exc)
    operation = getattr(exc, "operation_name", "") or "the call"
    message = exc.response.get("Error", {}).get("Message", "") or str(exc)
    service = _service(exc)
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError") \
            or status_code(exc) == 403 and code not in ("InvalidClientTokenId", "SignatureDoesNotMatch",
                                                         "ExpiredToken", "ExpiredTokenException"):
        action = iam_action(exc)
        needed = _POLICY_FOR.get(service, f"an IAM policy allowing {action}")
        return UserError(f"access denied: your AWS identity may not call {action} ({message}). "
                         f"Attach a policy allowing it: {needed}")
    if code in ("InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "ExpiredToken",
                "ExpiredTokenException", "InvalidAccessKeyId"):
        return UserError(f"AWS rejected the credentials ({code}: {message}); refresh them (aws sso login, aws "
                         "configure) or check AWS_PROFILE")
    if code in THROTTLED:
        return UserError(f"AWS kept throttling {operation} after retries ({message}); try again later or lower "
                         "--concurrency")
    if code in CONFLICT:
        return UserError(f"{operation}: another update is still in progress ({message}); wait a minute and rerun")
    return UserError(f"{operation} failed: {code}: {message}")


_IAM_OPS = {"GetRole", "CreateRole", "DeleteRole", "GetRolePolicy", "PutRolePolicy", "DeleteRolePolicy",
            "ListRolePolicies", "ListAttachedRolePolicies", "TagRole"}
_S3_ACTIONS = {"HeadBucket": "ListBucket", "HeadObject": "GetObject", "CreateBucket": "CreateBucket",
               "PutObject": "PutObject", "GetObject": "GetObject", "CreateMultipartUpload": "PutObject",
               "UploadPart": "PutObject", "CompleteMultipartUpload": "PutObject"}


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
    return f"{service}:{operation}" if service else operation
