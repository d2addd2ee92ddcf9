"""Operate a deployed function: what is there (status), point a stage back (rollback), take it down (destroy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from edgemaas.errors import UserError
from edgemaas.aws import ROLE_NAME, Aws
from edgemaas.aws.errors import error_code
from edgemaas.aws.policy import LOG_POLICY_PREFIX, log_policy_name


@dataclass
class AliasInfo:
    name: str
    version: str
    url: str | None
    auth: str | None


@dataclass
class VersionInfo:
    version: str
    code_sha256: str
    code_size: int
    last_modified: str
    description: str
    memory_mb: int
    runtime: str


@dataclass
class Status:
    function: str
    region: str
    arn: str
    tags: dict[str, str]
    versions: list[VersionInfo]
    aliases: list[AliasInfo]
    layers: list[str] = field(default_factory=list)


def _not_deployed(function: str, aws: Aws) -> UserError:
    return UserError(f"{function} is not deployed in {aws.region} (or not under this name); check --region and "
                     "--function-name, or deploy it with `edgemaas deploy`")


def get_function(lam: Any, function: str, aws: Aws) -> dict:
    try:
        return lam.get_function(FunctionName=function)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise _not_deployed(function, aws) from None
        raise


def _versions(lam: Any, function: str) -> list[dict]:
    versions = []
    for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName=function):
        versions += page.get("Versions", [])
    return versions


def _aliases(lam: Any, function: str) -> list[dict]:
    aliases = []
    for page in lam.get_paginator("list_aliases").paginate(FunctionName=function):
        aliases += page.get("Aliases", [])
    return aliases


def status(aws: Aws, function: str) -> Status:
    lam = aws.client("lambda")
    found = get_function(lam, function, aws)
    config = found["Configuration"]
    versions = [VersionInfo(v["Version"], v.get("CodeSha256", ""), v.get("CodeSize", 0), v.get("LastModified", ""),
                            v.get("Description", ""), v.get("MemorySize", 0), v.get("Runtime", ""))
                for v in _versions(lam, function)]
    aliases = []
    for alias in _aliases(lam, function):
        try:
            url = lam.get_function_url_config(FunctionName=function, Qualifier=alias["Name"])
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            url = None
        aliases.append(AliasInfo(alias["Name"], alias["FunctionVersion"], url and url["FunctionUrl"],
                                 url and url.get("AuthType")))
    return Status(function, aws.region, config["FunctionArn"], found.get("Tags") or {}, versions, aliases,
                  [layer["Arn"] for layer in config.get("Layers") or []])


def rollback(aws: Aws, function: str, stage: str, to: str) -> tuple[str, str]:
    """Point alias `stage` at version `to` (a number, or "previous": the newest version older than the current
    target). Returns (from, to)."""
    lam = aws.client("lambda")
    get_function(lam, function, aws)
    try:
        current = lam.get_alias(FunctionName=function, Name=stage)["FunctionVersion"]
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise UserError(f"{function} has no stage {stage!r}; see `edgemaas status`") from None
        raise
    published = sorted(int(v["Version"]) for v in _versions(lam, function) if v["Version"] != "$LATEST")
    if to == "previous":
        older = [v for v in published if current.isdigit() and v < int(current)]
        if not older:
            raise UserError(f"{function}:{stage} is at version {current}, the oldest there is: nothing to roll back "
                            "to")
        target = str(older[-1])
    elif to.isdigit() and int(to) in published:
        target = to
    else:
        listed = ", ".join(map(str, published)) or "none"
        raise UserError(f"{function} has no version {to!r} (published versions: {listed}); give one of them or "
                        "'previous'")
    if target != current:
        lam.update_alias(FunctionName=function, Name=stage, FunctionVersion=target)
    return current, target


@dataclass
class Destroyed:
    deleted: list[str]
    kept: list[str]


def _delete_role_policy(iam: Any, name: str) -> bool:
    try:
        iam.delete_role_policy(RoleName=ROLE_NAME, PolicyName=name)
        return True
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        return False


def destroy(aws: Aws, function: str, everything: bool = False) -> Destroyed:
    """Delete the function's URLs, aliases and the function (every version), and its log policy on the execution
    role. The runtime layer and the execution role are shared by every edgemaas function: kept, unless `everything`
    and no other function uses them (a function in another region shows by its log policy on the role)."""
    lam = aws.client("lambda")
    found = get_function(lam, function, aws)
    layer_arns = {layer["Arn"] for v in _versions(lam, function) for layer in v.get("Layers") or []}
    role = found["Configuration"].get("Role", "")
    deleted, kept = [], []
    for alias in _aliases(lam, function):
        try:
            lam.delete_function_url_config(FunctionName=function, Qualifier=alias["Name"])
            deleted.append(f"function URL of {function}:{alias['Name']}")
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
        lam.delete_alias(FunctionName=function, Name=alias["Name"])
        deleted.append(f"alias {function}:{alias['Name']}")
    lam.delete_function(FunctionName=function)
    deleted.append(f"function {function} (all versions)")

    others = []
    for page in lam.get_paginator("list_functions").paginate():
        others += [f for f in page.get("Functions", []) if f["FunctionName"] != function]
    layers_in_use = {layer["Arn"] for f in others for layer in f.get("Layers") or []}
    for arn in sorted(layer_arns):
        name, version = arn.rsplit(":", 2)[-2:]
        if everything and arn not in layers_in_use:
            lam.delete_layer_version(LayerName=name, VersionNumber=int(version))
            deleted.append(f"layer {name}:{version}")
        else:
            kept.append(f"layer {name}:{version}" + (" (used by other functions)" if everything else ""))
    if role.endswith(f":role/{ROLE_NAME}"):
        iam = aws.client("iam")
        if _delete_role_policy(iam, log_policy_name(function, aws.region)):
            deleted.append(f"the role's log policy for {function}")
        if everything:
            remaining = [name for page in iam.get_paginator("list_role_policies").paginate(RoleName=ROLE_NAME)
                         for name in page.get("PolicyNames", [])]
            # Another function's log policy means it is in use, in this region or another.
            users = [name for name in remaining if name.startswith(LOG_POLICY_PREFIX)]
            if any(f.get("Role") == role for f in others) or users:
                kept.append(f"role {ROLE_NAME} (used by other functions)")
            else:
                for name in remaining:  # e.g. a policy an older edgemaas wrote
                    _delete_role_policy(iam, name)
                iam.delete_role(RoleName=ROLE_NAME)
                deleted.append(f"role {ROLE_NAME}")
        else:
            kept.append(f"role {ROLE_NAME}")
    return Destroyed(deleted, kept)
