"""Deploy a packaged function to AWS Lambda: build the request, plan, execute (the shape of chalice's deployer).

- `load_request` reads `dist/<name>/lambda/package.json` and the options: what the account should hold. No AWS call.
- `plan` compares that with the account using describe/list calls only, and returns a `Plan`: one `Step` per resource
  with its action (create, update, publish, upload, delete or no-op) and why. `--dry-run` stops here.
- `execute` carries out the steps that are not no-ops, in order, waiting with boto3's waiters.

Steps are records without behaviour. Every decision is made from what the account holds now, so a deploy that was
interrupted half way completes when run again, and a deploy with nothing changed changes nothing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgemaas.errors import UserError
from edgemaas.runtime.manifest import sha256_file
from edgemaas.units import human_size
from edgemaas.aws import Aws
# DIRECT_UPLOAD_LIMIT is read from this module's globals at call time (tests lower it).
from edgemaas.aws.names import DIRECT_UPLOAD_LIMIT, HANDLER, MB, ROLE_NAME, default_bucket, function_name
from edgemaas.aws.errors import error_code
from edgemaas.aws.policy import ASSUME_ROLE_POLICY, execution_policy, log_policy_name

URL_PERMISSION_SID = "edgemaas-function-url-public"
NO_OP = "no-op"
# The order steps run in: uploads before what reads them, the function before its version, alias and URL.
STEP_ORDER = ("role", "s3 bucket", "s3 object", "layer", "function", "configuration", "tags", "version", "alias",
              "url")
AUTH_TYPES = ("NONE", "AWS_IAM")


@dataclass
class Artifact:
    """A zip to ship: the function code, or the runtime layer."""

    path: Path
    sha256: str  # hex, as in package.json
    size: int

    @property
    def code_sha256(self) -> str:
        """Lambda's CodeSha256: the base64 of the zip's sha256."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()


@dataclass
class DeployRequest:
    """What the account should hold after the deploy."""

    model: str
    variant: str
    function_name: str
    stage: str
    code: Artifact
    handler: str
    runtime: str
    arch: str
    memory_mb: int
    timeout_s: int
    environment: dict[str, str]
    tags: dict[str, str]
    layer_name: str | None = None
    layer: Artifact | None = None
    s3_bucket: str | None = None  # given with --s3-bucket; else a default one when a zip is over the limit
    url: bool = True
    auth: str = "NONE"
    snapstart: bool = False  # SnapStart on published versions (python3.12+)
    memory_source: str = ""  # where memory_mb came from, for the plan's text (--memory auto)


@dataclass
class Step:
    resource: str  # role, layer, s3 bucket, s3 object, function, configuration, tags, version, alias, url
    name: str
    action: str  # create, update, publish, upload, delete or no-op
    why: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    request: DeployRequest
    region: str
    account: str
    partition: str
    role_arn: str
    steps: list[Step]
    layer_arn: str | None = None  # known when the layer is a no-op
    version: str | None = None  # the version the alias should point at, when no new one is published
    url: str | None = None


@dataclass
class DeployResult:
    function_name: str
    stage: str
    version: str
    alias_arn: str
    url: str | None
    changed: bool
    done: list[Step]


def changes(plan: Plan) -> list[Step]:
    return [step for step in plan.steps if step.action != NO_OP]


# ---------------------------------------------------------------------------------------------------- the request

def find_record(target: str, dist: Path) -> Path:
    """package.json for TARGET: a model name (dist/<name>/lambda), a dist folder, a package.json or a function.zip."""
    path = Path(target)
    candidates = [path] if path.name == "package.json" else []
    if path.suffix == ".zip":
        candidates.append(path.parent / "package.json")
    candidates += [path / "package.json", path / "lambda" / "package.json", dist / target / "lambda" / "package.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"{target}: no package.json there, and no {dist / target / 'lambda' / 'package.json'}; "
                    f"run `edgemaas package {target}` first")


def _artifact(recorded: str, fallback: Path, sha256: str, what: str) -> Artifact:
    path = Path(recorded)
    if not path.is_file() and fallback.is_file():
        path = fallback
    if not path.is_file():
        raise UserError(f"the {what} {recorded} is missing; run `edgemaas package` again")
    if sha256_file(path) != sha256:
        raise UserError(f"the {what} {path} changed since it was packaged (its sha256 differs from package.json); "
                        "run `edgemaas package` again")
    return Artifact(path, sha256, path.stat().st_size)


SNAPSTART_PYTHONS = ("3.12", "3.13")  # Lambda's SnapStart for Python starts at python3.12


def load_request(target: str, dist: Path, stage: str = "dev", function: str | None = None,
                 memory_mb: int | str | None = None, timeout_s: int | None = None, s3_bucket: str | None = None,
                 url: bool = True, auth: str = "NONE", log_level: str = "INFO", snapstart: bool = False,
                 build: Path | None = None) -> DeployRequest:
    """`memory_mb`: MB, None (the package's) or "auto" (what the gate priced cheapest for the shipped variant, from
    `build/<model>/selection.json`; the package's when the selection has no price). `snapstart` needs python3.12+."""
    record_path = find_record(target, dist)
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{record_path}: not valid JSON ({exc.msg}); run `edgemaas package` again") from None
    layout = record.get("layout", "zip")
    if layout == "image":
        raise UserError(f"{record_path}: a container image package; deploy pushes zip packages only. Package with "
                        "--layout zip or --layout layer, or push the image with docker and create the function "
                        "from it")
    if auth not in AUTH_TYPES:
        raise UserError(f"--auth must be one of {', '.join(AUTH_TYPES)}")
    here = record_path.parent
    code = _artifact(record["zip_path"], here / Path(record["zip_path"]).name, record["sha256"], "function zip")
    layer = None
    if record.get("layer"):
        spec = record["layer"]
        layer = _artifact(spec["zip_path"], here.parent.parent / "layers" / Path(spec["zip_path"]).name,
                          spec["sha256"], "runtime layer zip")
    model = record["model"]
    python = record["python_version"]
    if snapstart and python not in SNAPSTART_PYTHONS:
        raise UserError(f"{record_path}: SnapStart for Python needs python3.12 or later and this package is for "
                        f"python{python}; package with --python-version 3.12 (or deploy without --snapstart)")
    memory, memory_source = _memory(memory_mb, record, build)
    tags = {"edgemaas:model": model, "edgemaas:variant": record.get("variant", ""),
            "edgemaas:model-sha256": record.get("model_sha256", ""), "edgemaas:package-sha256": record["sha256"]}
    return DeployRequest(
        model=model, variant=record.get("variant", ""), function_name=function_name(model, function), stage=stage,
        code=code, handler=record.get("handler", HANDLER), runtime=f"python{python}",
        arch=record.get("arch", "x86_64"), memory_mb=memory, memory_source=memory_source, snapstart=snapstart,
        timeout_s=timeout_s or record.get("timeout_s", 30), environment={"EDGEMAAS_LOG_LEVEL": log_level},
        tags={k: v for k, v in tags.items() if v}, layer_name=record["layer"]["name"] if layer else None,
        layer=layer, s3_bucket=s3_bucket, url=url, auth=auth)


def _memory(memory_mb: int | str | None, record: dict[str, Any], build: Path | None) -> tuple[int, str]:
    """The memory to configure and where it came from."""
    packaged = int(record.get("memory_mb", 512))
    if memory_mb is None:
        return packaged, "the package's"
    if memory_mb != "auto":
        return int(memory_mb), "--memory"
    from edgemaas.compress.cost import chosen_memory
    from edgemaas.compress.records import load_selection

    selection_file = (build or Path("build")) / record["model"] / "selection.json"
    chosen = chosen_memory(load_selection(selection_file), record.get("model_format"))
    if chosen is None:
        return packaged, f"the package's ({selection_file} prices no memory: compress again to price it)"
    return chosen, f"the cheapest the gate priced for {record.get('variant', 'the shipped variant')}"


# ------------------------------------------------------------------------------------------------------- the plan

def _missing(call: Callable[[], Any], *codes: str) -> Any:
    """call(), or None when the resource does not exist."""
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as exc:
        if error_code(exc) in codes or error_code(exc) in ("ResourceNotFoundException", "NoSuchEntity", "404",
                                                             "NoSuchKey", "NotFound", "NoSuchBucket"):
            return None
        raise


def _config_of(request: DeployRequest, role_arn: str, layer_arn: str | None) -> dict[str, Any]:
    """The function configuration we want, in GetFunctionConfiguration's terms."""
    return {"Runtime": request.runtime, "Handler": request.handler, "MemorySize": request.memory_mb,
            "Timeout": request.timeout_s, "Role": role_arn, "Environment": request.environment,
            "Layers": [layer_arn] if request.layer else [],
            "SnapStart": _snapstart(request)}


def _snapstart(request: DeployRequest) -> dict[str, str]:
    return {"ApplyOn": "PublishedVersions" if request.snapstart else "None"}


def _actual_config(config: dict[str, Any]) -> dict[str, Any]:
    return {"Runtime": config.get("Runtime"), "Handler": config.get("Handler"),
            "MemorySize": config.get("MemorySize"), "Timeout": config.get("Timeout"), "Role": config.get("Role"),
            "Environment": (config.get("Environment") or {}).get("Variables", {}),
            "Layers": [layer["Arn"] for layer in config.get("Layers") or []],
            "SnapStart": {"ApplyOn": (config.get("SnapStart") or {}).get("ApplyOn", "None")}}


def _differences(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    return [key for key in want if want[key] != have.get(key)]


def _uses_s3(request: DeployRequest, artifact: Artifact) -> bool:
    return bool(request.s3_bucket) or artifact.size > DIRECT_UPLOAD_LIMIT


def plan(aws: Aws, request: DeployRequest) -> Plan:
    """What to change, from describe/list calls only."""
    sts, iam, lam, s3 = aws.client("sts"), aws.client("iam"), aws.client("lambda"), None
    identity = sts.get_caller_identity()
    account, partition = identity["Account"], identity["Arn"].split(":")[1]
    steps: list[Step] = []

    # The execution role, shared by edgemaas functions; each function's inline policy writes its own logs only.
    role = _missing(lambda: iam.get_role(RoleName=ROLE_NAME))
    policy_name = log_policy_name(request.function_name, aws.region)
    policy = execution_policy(request.function_name, aws.region, account, partition)
    params = {"policy_name": policy_name, "policy": policy}
    if role is None:
        role_arn = f"arn:{partition}:iam::{account}:role/{ROLE_NAME}"
        steps.append(Step("role", ROLE_NAME, "create", "no execution role yet (it may write this function's logs, "
                                                       "nothing else)", params))
    else:
        role_arn = role["Role"]["Arn"]
        inline = _missing(lambda: iam.get_role_policy(RoleName=ROLE_NAME, PolicyName=policy_name))
        document = inline and inline["PolicyDocument"]
        if isinstance(document, str):
            from urllib.parse import unquote

            document = json.loads(unquote(document))
        if document != policy:
            steps.append(Step("role", ROLE_NAME, "update", f"its policy {policy_name} (this function's logs) is "
                                                           "missing or different", params))
        else:
            steps.append(Step("role", ROLE_NAME, NO_OP, f"exists; {policy_name} lets it write this function's logs"))

    # The shared runtime layer: a version whose description carries the zip's sha256.
    layer_arn = None
    if request.layer:
        marker = f"sha256:{request.layer.sha256}"
        versions = []
        for page in lam.get_paginator("list_layer_versions").paginate(LayerName=request.layer_name):
            versions += page.get("LayerVersions", [])
        same = [v for v in versions if marker in (v.get("Description") or "")]
        if same:
            best = max(same, key=lambda v: v["Version"])
            layer_arn = best["LayerVersionArn"]
            steps.append(Step("layer", request.layer_name, NO_OP, f"version {best['Version']} has this content"))
        else:
            why = "no version yet" if not versions else "the runtime changed since the latest version"
            steps.append(Step("layer", request.layer_name, "publish", f"{why} ({human_size(request.layer.size)})",
                              {"marker": marker}))

    # The function, its code, configuration and tags.
    name = request.function_name
    function = _missing(lambda: lam.get_function(FunctionName=name))
    want = _config_of(request, role_arn, layer_arn or "(new layer version)")
    code_changes = config_changes = False
    if function is None:
        steps.append(Step("function", name, "create",
                          f"not deployed yet ({request.runtime}, {request.arch}, {human_size(request.code.size)})"))
        code_changes = True
    else:
        have = function["Configuration"]
        if have.get("CodeSha256") != request.code.code_sha256 or have.get("Architectures", ["x86_64"]) != [
                request.arch]:
            why = "the zip changed" if have.get("CodeSha256") != request.code.code_sha256 else "architecture changed"
            steps.append(Step("function", name, "update", f"{why} ({human_size(request.code.size)})"))
            code_changes = True
        else:
            steps.append(Step("function", name, NO_OP, "the deployed code has the same sha256"))
        differs = _differences(want, _actual_config(have))
        if differs:
            steps.append(Step("configuration", name, "update", f"{', '.join(differs)} changed"))
            config_changes = True
        else:
            steps.append(Step("configuration", name, NO_OP,
                              "memory, timeout, runtime, environment, layers, SnapStart as wanted"))
        tags = function.get("Tags") or {}
        stale = {k: v for k, v in request.tags.items() if tags.get(k) != v}
        if stale:
            steps.append(Step("tags", name, "update", f"{', '.join(sorted(stale))} differ", {"tags": stale}))
        else:
            steps.append(Step("tags", name, NO_OP, "model name and sha256 tagged"))

    # Code and a new layer through S3 when large or asked for.
    uploads = [(request.code, "function zip", f"edgemaas/{name}/{request.code.sha256}.zip")] if code_changes else []
    if request.layer and layer_arn is None:
        uploads.append((request.layer, "layer zip", f"edgemaas/layers/{request.layer_name}/{request.layer.sha256}.zip"))
    uploads = [u for u in uploads if _uses_s3(request, u[0])]
    bucket = None
    if uploads:
        s3 = aws.client("s3")
        bucket = request.s3_bucket or default_bucket(account, aws.region)
        reason = "--s3-bucket given" if request.s3_bucket else \
            f"a zip is over Lambda's {DIRECT_UPLOAD_LIMIT // MB} MB direct upload"
        exists = _missing(lambda: s3.head_bucket(Bucket=bucket)) is not None
        steps.append(Step("s3 bucket", bucket, NO_OP if exists else "create",
                          f"exists ({reason})" if exists else f"{reason}; the bucket does not exist yet"))
        for artifact, what, key in uploads:
            present = exists and _missing(lambda key=key: s3.head_object(Bucket=bucket, Key=key)) is not None
            steps.append(Step("s3 object", f"s3://{bucket}/{key}", NO_OP if present else "upload",
                              f"{what} already uploaded" if present else f"{what}: {reason}",
                              {"bucket": bucket, "key": key, "what": what}))

    # A version with this code and configuration, the alias on it, the URL on the alias.
    version = None
    if function is None or code_changes or config_changes or (request.layer and layer_arn is None):
        steps.append(Step("version", name, "publish", "new code or configuration"))
    else:
        versions = []
        for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName=name):
            versions += [v for v in page.get("Versions", []) if v["Version"] != "$LATEST"]
        matching = [v for v in versions if v.get("CodeSha256") == request.code.code_sha256
                    and not _differences(want, _actual_config(v))]
        if matching:
            version = str(max(int(v["Version"]) for v in matching))
            steps.append(Step("version", f"{name}:{version}", NO_OP, "a published version has this code and "
                                                                     "configuration"))
        else:
            steps.append(Step("version", name, "publish", "$LATEST holds changes no version has yet"))
    alias = _missing(lambda: lam.get_alias(FunctionName=name, Name=request.stage)) if function else None
    if alias is None:
        steps.append(Step("alias", f"{name}:{request.stage}", "create", f"no {request.stage} alias yet"))
    elif version is None or alias["FunctionVersion"] != version:
        target = f"version {version}" if version else "the new version"
        steps.append(Step("alias", f"{name}:{request.stage}", "update",
                          f"points at version {alias['FunctionVersion']}; moving to {target}"))
    else:
        steps.append(Step("alias", f"{name}:{request.stage}", NO_OP, f"points at version {version}"))

    url_config = (_missing(lambda: lam.get_function_url_config(FunctionName=name, Qualifier=request.stage))
                  if alias is not None else None)
    url = url_config["FunctionUrl"] if url_config else None
    if request.url:
        if url_config is None:
            steps.append(Step("url", f"{name}:{request.stage}", "create", f"no function URL yet (auth {request.auth})"))
        elif url_config.get("AuthType") != request.auth:
            steps.append(Step("url", f"{name}:{request.stage}", "update",
                              f"auth {url_config.get('AuthType')} → {request.auth}"))
        else:
            steps.append(Step("url", f"{name}:{request.stage}", NO_OP, f"exists (auth {request.auth})"))
    elif url_config is not None:
        steps.append(Step("url", f"{name}:{request.stage}", "delete", "--no-url given"))
        url = None
    steps.sort(key=lambda step: STEP_ORDER.index(step.resource))
    return Plan(request, aws.region, account, partition, role_arn, steps, layer_arn, version, url)


# ---------------------------------------------------------------------------------------------------- execution

def execute(aws: Aws, plan: Plan, report: Callable[[Step], None] = lambda step: None) -> DeployResult:
    """Carry out the plan's changes in order. The client retries throttling, 5xx and updates in progress
    (`retries`); a create that finds its resource already made (by an earlier, interrupted run, or a retried call
    that had reached AWS) updates it instead, so running the same deploy again always converges."""
    request, lam = plan.request, aws.client("lambda")
    iam = aws.client("iam") if any(s.resource == "role" and s.action != NO_OP for s in plan.steps) else None
    s3 = aws.client("s3") if any(s.resource.startswith("s3") and s.action != NO_OP for s in plan.steps) else None
    name, layer_arn, version, url = request.function_name, plan.layer_arn, plan.version, plan.url
    s3_code: dict[str, dict[str, str]] = {}  # what → {"S3Bucket", "S3Key"} for zips shipped through S3
    for step in plan.steps:
        if step.resource == "s3 object":
            s3_code[step.params["what"]] = {"S3Bucket": step.params["bucket"], "S3Key": step.params["key"]}
    function_arn = None
    done = []
    for step in plan.steps:
        if step.action == NO_OP:
            continue
        report(step)
        if step.resource == "role":
            if step.action == "create":
                _unless_exists(iam.create_role, RoleName=ROLE_NAME,
                               AssumeRolePolicyDocument=json.dumps(ASSUME_ROLE_POLICY),
                               Description="edgemaas Lambda functions: each may write its own logs, nothing else",
                               Tags=[{"Key": "edgemaas", "Value": "true"}])
            iam.put_role_policy(RoleName=ROLE_NAME, PolicyName=step.params["policy_name"],
                                PolicyDocument=json.dumps(step.params["policy"]))
        elif step.resource == "s3 bucket":
            kwargs: dict[str, Any] = {"Bucket": step.name}
            if aws.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": aws.region}
            _unless_exists(s3.create_bucket, **kwargs)
        elif step.resource == "s3 object":
            source = request.code if step.params["what"] == "function zip" else request.layer
            s3.upload_file(str(source.path), step.params["bucket"], step.params["key"])
        elif step.resource == "layer":
            content = s3_code.get("layer zip") or {"ZipFile": request.layer.path.read_bytes()}
            published = lam.publish_layer_version(
                LayerName=request.layer_name, Description=f"edgemaas runtime {step.params['marker']}",
                Content=content, CompatibleRuntimes=[request.runtime], CompatibleArchitectures=[request.arch])
            layer_arn = published["LayerVersionArn"]
        elif step.resource == "function":
            code = s3_code.get("function zip") or {"ZipFile": request.code.path.read_bytes()}
            config = _function_config(request, plan.role_arn, layer_arn)
            created = None
            if step.action == "create":
                created = _unless_exists(lam.create_function, FunctionName=name, Code=code, PackageType="Zip",
                                         Architectures=[request.arch], Tags=request.tags, **config)
            if created is not None:
                function_arn = created["FunctionArn"]
                lam.get_waiter("function_active_v2").wait(FunctionName=name)
            else:  # an update, or a create that an earlier attempt had already made
                lam.update_function_code(FunctionName=name, Architectures=[request.arch], **code)
                lam.get_waiter("function_updated_v2").wait(FunctionName=name)
                if step.action == "create":
                    lam.update_function_configuration(FunctionName=name, **config)
                    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        elif step.resource == "configuration":
            config = _function_config(request, plan.role_arn, layer_arn)
            lam.update_function_configuration(FunctionName=name, **config)
            lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        elif step.resource == "tags":
            function_arn = function_arn or lam.get_function_configuration(FunctionName=name)["FunctionArn"]
            lam.tag_resource(Resource=function_arn, Tags=step.params["tags"])
        elif step.resource == "version":
            published = lam.publish_version(
                FunctionName=name, CodeSha256=request.code.code_sha256,
                Description=f"edgemaas {request.model} {request.variant} {request.code.sha256[:12]}")
            version = published["Version"]
            if request.snapstart:  # Lambda snapshots the version now; it is Pending, not invocable, until done
                lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier=version)
        elif step.resource == "alias":
            if step.action != "create" or _unless_exists(
                    lam.create_alias, FunctionName=name, Name=request.stage, FunctionVersion=version,
                    Description=f"edgemaas stage {request.stage}") is None:
                lam.update_alias(FunctionName=name, Name=request.stage, FunctionVersion=version)
        elif step.resource == "url":
            if step.action == "delete":
                lam.delete_function_url_config(FunctionName=name, Qualifier=request.stage)
                url = None
            else:
                made = None
                if step.action == "create":
                    made = _unless_exists(lam.create_function_url_config, FunctionName=name,
                                          Qualifier=request.stage, AuthType=request.auth)
                if made is None:
                    made = lam.update_function_url_config(FunctionName=name, Qualifier=request.stage,
                                                          AuthType=request.auth)
                url = made["FunctionUrl"]
                if request.auth == "NONE":
                    _allow_public_url(lam, name, request.stage)
        done.append(step)
    alias = lam.get_alias(FunctionName=name, Name=request.stage)
    return DeployResult(name, request.stage, alias["FunctionVersion"], alias["AliasArn"], url, bool(done), done)


# What AWS answers when a create finds its resource there already. Lambda's ResourceConflictException also means
# "update in progress", which the client retries: only its "already exist(s)" wording means "exists" (moto says
# ConflictException for an alias).
_EXISTS_CODES = {"EntityAlreadyExists", "BucketAlreadyOwnedByYou"}
_EXISTS_WORDS = ("already exist", "exists for this")


def _unless_exists(create: Callable[..., Any], **params: Any) -> Any:
    """create(**params), or None when what it creates exists already."""
    from botocore.exceptions import ClientError

    try:
        return create(**params)
    except ClientError as exc:
        code, message = error_code(exc), str(exc).lower()
        if code in _EXISTS_CODES or ("Conflict" in code or code == "ResourceInUseException") and any(
                word in message for word in _EXISTS_WORDS):
            return None
        raise


def _function_config(request: DeployRequest, role_arn: str, layer_arn: str | None) -> dict[str, Any]:
    return {"Runtime": request.runtime, "Role": role_arn, "Handler": request.handler,
            "MemorySize": request.memory_mb, "Timeout": request.timeout_s,
            "Environment": {"Variables": request.environment}, "Layers": [layer_arn] if layer_arn else [],
            "Description": f"edgemaas {request.model} ({request.variant})", "SnapStart": _snapstart(request)}


def _allow_public_url(lam: Any, name: str, stage: str) -> None:
    """AuthType NONE serves the public only with a resource policy allowing lambda:InvokeFunctionUrl to everyone."""
    from botocore.exceptions import ClientError

    try:
        lam.add_permission(FunctionName=name, Qualifier=stage, StatementId=URL_PERMISSION_SID,
                           Action="lambda:InvokeFunctionUrl", Principal="*", FunctionUrlAuthType="NONE")
    except ClientError as exc:
        if error_code(exc) != "ResourceConflictException":  # the statement is there already
            raise
