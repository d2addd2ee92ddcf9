"""AWS names and Lambda limits edgemaas uses, with no boto3: packaging reads these without importing deploy code.

`edgemaas.aws` re-exports the names (FUNCTION_PREFIX, ROLE_NAME, function_name) for its callers.
"""

from __future__ import annotations

FUNCTION_PREFIX = "edgemaas-"  # functions and layers; the deploy policy's resources are named by this prefix
ROLE_NAME = "edgemaas-lambda-role"
LAMBDA_SERVICE = "lambda.amazonaws.com"
# What a function writes into a log group that exists already (a template makes it): streams and events.
LOG_GROUP_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
HANDLER = "handler.handler"  # handler.py at the zip's root, function `handler`

MB = 1024 * 1024
DIRECT_UPLOAD_LIMIT = 50 * MB  # zipped, for a direct CreateFunction/UpdateFunctionCode upload
UNZIPPED_LIMIT = 250 * MB  # function code plus all layers, unzipped
IMAGE_LIMIT = 10 * 1024 * MB  # container images


def function_name(model: str, override: str | None = None) -> str:
    return override or f"{FUNCTION_PREFIX}{model}"


def default_bucket(account: str, region: str) -> str:
    """Where deploy puts zips over the direct-upload limit, unless --s3-bucket names one."""
    return f"edgemaas-artifacts-{account}-{region}"
