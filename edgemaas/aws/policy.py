"""Every IAM policy edgemaas writes or asks for, made here and nowhere else.

- `execution_policy`: what a deployed function's role may do: write its own log group, nothing else.
- `ASSUME_ROLE_POLICY`: who may take that role (Lambda).
- `deploy_policy`: the least a person or CI needs to run `edgemaas deploy` (and, with `operate=True`, status,
  rollback, destroy and invoke). `edgemaas deploy-policy` prints it; an access error quotes its statement.

No statement names a wildcard action. Resources are the narrowest ARNs each action accepts: functions and layers
named edgemaas-*, the one execution role, the artifacts bucket. Only lambda:ListLayerVersions and
lambda:ListFunctions take no resource but "*" (IAM has no resource type for them).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Iterator

from edgemaas.aws.names import FUNCTION_PREFIX, LAMBDA_SERVICE, LOG_GROUP_ACTIONS, ROLE_NAME, default_bucket

VERSION = "2012-10-17"
LOG_POLICY_PREFIX = "edgemaas-logs-"

ASSUME_ROLE_POLICY: dict[str, Any] = {
    "Version": VERSION,
    "Statement": [{"Effect": "Allow", "Principal": {"Service": LAMBDA_SERVICE}, "Action": "sts:AssumeRole"}],
}


def log_group_arn(function: str, region: str, account: str, partition: str = "aws") -> str:
    """The function's log group and every stream in it (Lambda writes to /aws/lambda/<function>)."""
    return f"arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{function}:*"


def log_policy_name(function: str, region: str) -> str:
    """One inline policy per function and region on the shared role, so that each names only its own log group."""
    return f"{LOG_POLICY_PREFIX}{region}-{function}"


def execution_policy(function: str, region: str, account: str, partition: str = "aws") -> dict[str, Any]:
    """What AWSLambdaBasicExecutionRole grants, narrowed from every log group to this function's."""
    return {
        "Version": VERSION,
        "Statement": [{
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", *LOG_GROUP_ACTIONS],  # Lambda makes the group at the first log
            "Resource": log_group_arn(function, region, account, partition),
        }],
    }


def deploy_policy(account: str = "*", region: str = "*", partition: str = "aws", bucket: str | None = None,
                  function_prefix: str = FUNCTION_PREFIX, operate: bool = True) -> dict[str, Any]:
    """The minimal identity policy for `edgemaas deploy` in ACCOUNT and REGION ("*": any).

    `bucket` is where zips over the direct-upload limit (or --s3-bucket) go: default, the bucket deploy makes
    (edgemaas-artifacts-<account>-<region>). `operate` adds what status, rollback, destroy and invoke call."""
    functions = f"arn:{partition}:lambda:{region}:{account}:function:{function_prefix}*"
    layers = f"arn:{partition}:lambda:{region}:{account}:layer:{FUNCTION_PREFIX}*"  # packaging names them so
    role = f"arn:{partition}:iam::{account}:role/{ROLE_NAME}"
    bucket = bucket or (default_bucket(account, region) if "*" not in (account, region)
                        else "edgemaas-artifacts-*")
    statements = [
        _statement("ReadFunctions", functions, "lambda:GetFunction", "lambda:GetFunctionConfiguration",
                   "lambda:ListTags",  # GetFunction returns a tagged function only with it
                   "lambda:ListVersionsByFunction", "lambda:GetAlias", "lambda:GetFunctionUrlConfig"),
        _statement("DeployFunctions", functions, "lambda:CreateFunction", "lambda:UpdateFunctionCode",
                   "lambda:UpdateFunctionConfiguration", "lambda:TagResource", "lambda:PublishVersion",
                   "lambda:CreateAlias", "lambda:UpdateAlias", "lambda:CreateFunctionUrlConfig",
                   "lambda:UpdateFunctionUrlConfig", "lambda:DeleteFunctionUrlConfig", "lambda:AddPermission"),
        _statement("PublishLayers", layers, "lambda:PublishLayerVersion"),
        _statement("UseLayers", f"{layers}:*", "lambda:GetLayerVersion"),  # a function config naming a layer
        _statement("ListLayerVersions", "*", "lambda:ListLayerVersions"),  # no resource-level permission exists
        _statement("ExecutionRole", role, "iam:GetRole", "iam:CreateRole", "iam:TagRole", "iam:GetRolePolicy",
                   "iam:PutRolePolicy"),
        {**_statement("PassExecutionRoleToLambda", role, "iam:PassRole"),
         "Condition": {"StringEquals": {"iam:PassedToService": LAMBDA_SERVICE}}},
        _statement("ArtifactBucket", f"arn:{partition}:s3:::{bucket}", "s3:CreateBucket", "s3:ListBucket"),
        _statement("ArtifactObjects", f"arn:{partition}:s3:::{bucket}/edgemaas/*", "s3:PutObject", "s3:GetObject"),
    ]
    if operate:
        statements += [
            _statement("OperateFunctions", functions, "lambda:ListAliases", "lambda:InvokeFunction",
                       "lambda:DeleteAlias", "lambda:DeleteFunction"),
            _statement("DeleteLayerVersions", f"{layers}:*", "lambda:DeleteLayerVersion"),
            _statement("ListFunctions", "*", "lambda:ListFunctions"),  # destroy: is the layer or role still used?
            _statement("DeleteExecutionRole", role, "iam:ListRolePolicies", "iam:DeleteRolePolicy",
                       "iam:DeleteRole"),
        ]
    return {"Version": VERSION, "Statement": statements}


def _statement(sid: str, resource: str, *actions: str) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": resource}


def statement_for(action: str, policy: dict[str, Any]) -> dict[str, Any] | None:
    """The statement of `policy` that allows `action`, narrowed to that one action (None when none does)."""
    for statement in policy["Statement"]:
        if action.lower() in (a.lower() for a in _listed(statement.get("Action"))):
            found = copy.deepcopy(statement)
            found["Action"] = [a for a in _listed(statement["Action"]) if a.lower() == action.lower()]
            return found
    return None


def actions(document: dict[str, Any] | str) -> Iterator[str]:
    """Every action (and NotAction) named in a policy document."""
    if isinstance(document, str):
        document = json.loads(document)
    statements = document.get("Statement", [])
    for statement in [statements] if isinstance(statements, dict) else statements:
        for key in ("Action", "NotAction"):
            yield from _listed(statement.get(key))


def _listed(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def render(policy: dict[str, Any]) -> str:
    return json.dumps(policy, indent=2)
