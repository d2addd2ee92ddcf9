"""`edgemaas deploy`, `status`, `rollback`, `destroy` against a real moto_server (tests/integration/aws_fixtures.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from edgemaas.aws import ROLE_NAME
from edgemaas.aws import deploy as deploy_module
from edgemaas.cli import cli
from edgemaas.packaging.awslambda.lambda_zip import write_deterministic_zip
from edgemaas.runtime.manifest import sha256_file
from tests.integration.aws_fixtures import MotoServer, moto_server  # noqa: F401 (a fixture)

FUNCTION = "edgemaas-tiny"
HANDLER = b"def handler(event, context):\n    return {'model': 'tiny', 'predictions': event.get('inputs')}\n"


def write_package(root: Path, version: str = "1", layout: str = "zip", layer_version: str = "1",
                  memory_mb: int = 256, name: str = "tiny") -> Path:
    """A tiny real function zip and its package.json in root/dist/<name>/lambda (and a layer zip for "layer")."""
    out = root / "dist" / name / "lambda"
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / "function.zip"
    write_deterministic_zip(zip_path, {"handler.py": HANDLER, "model/VERSION": version.encode()})
    layer = None
    if layout == "layer":
        layers = root / "dist" / "layers"
        layers.mkdir(parents=True, exist_ok=True)
        layer_zip = layers / "edgemaas-litert-py312-x86_64.zip"
        write_deterministic_zip(layer_zip, {"python/runtime/VERSION": layer_version.encode()})
        layer = {"name": "edgemaas-litert-py312-x86_64", "zip_path": str(layer_zip), "sha256": sha256_file(layer_zip),
                 "zipped_bytes": layer_zip.stat().st_size, "unzipped_bytes": 10}
    record = {"zip_path": str(zip_path), "zipped_bytes": zip_path.stat().st_size, "unzipped_bytes": 100,
              "sha256": sha256_file(zip_path), "handler": "handler.handler", "python_version": "3.12",
              "arch": "x86_64", "model": name, "variant": "tflite-int8", "model_format": "tflite",
              "requirements": [], "layout": layout, "layer": layer, "memory_mb": memory_mb, "timeout_s": 30,
              "model_sha256": "ab" * 32}
    (out / "package.json").write_text(json.dumps(record))
    return out


@pytest.fixture
def project(tmp_path: Path, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    monkeypatch.chdir(tmp_path)
    write_package(tmp_path)
    return tmp_path


def run(*args: str, input: str | None = None) -> object:
    result = CliRunner().invoke(cli, list(args), input=input)
    return result


def lam() -> object:
    return boto3.client("lambda")


def test_deploy_creates_everything(project: Path) -> None:
    result = run("deploy", "tiny", "--stage", "dev")
    assert result.exit_code == 0, result.output
    assert "deployed edgemaas-tiny version 1 → alias dev" in result.output
    client = lam()
    config = client.get_function(FunctionName=FUNCTION)
    assert config["Configuration"]["Runtime"] == "python3.12"
    assert config["Configuration"]["MemorySize"] == 256
    assert config["Configuration"]["Environment"]["Variables"] == {"EDGEMAAS_LOG_LEVEL": "INFO"}
    assert config["Tags"]["edgemaas:model"] == "tiny" and config["Tags"]["edgemaas:model-sha256"] == "ab" * 32
    assert client.get_alias(FunctionName=FUNCTION, Name="dev")["FunctionVersion"] == "1"
    url = client.get_function_url_config(FunctionName=FUNCTION, Qualifier="dev")
    assert url["AuthType"] == "AWS_IAM" and url["FunctionUrl"] in result.output
    iam = boto3.client("iam")
    assert iam.list_role_policies(RoleName=ROLE_NAME)["PolicyNames"] == [f"edgemaas-logs-us-east-1-{FUNCTION}"]
    policy = iam.get_role_policy(RoleName=ROLE_NAME, PolicyName=f"edgemaas-logs-us-east-1-{FUNCTION}")
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert sorted(statement["Action"]) == ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{FUNCTION}:*"
    assert config["Configuration"]["Role"].endswith(f":role/{ROLE_NAME}")


def test_redeploy_with_nothing_changed_changes_nothing(project: Path) -> None:
    assert run("deploy", "tiny").exit_code == 0
    before = lam().list_versions_by_function(FunctionName=FUNCTION)["Versions"]
    result = run("deploy", "tiny")
    assert result.exit_code == 0, result.output
    assert "nothing changed: edgemaas-tiny:dev is up to date (version 1)" in result.output
    assert "create" not in result.output and "update" not in result.output
    assert lam().list_versions_by_function(FunctionName=FUNCTION)["Versions"] == before


def test_changed_zip_publishes_a_new_version_and_moves_the_alias(project: Path) -> None:
    assert run("deploy", "tiny").exit_code == 0
    write_package(project, version="2")
    result = run("deploy", "tiny")
    assert result.exit_code == 0, result.output
    assert "the zip changed" in result.output
    client = lam()
    assert client.get_alias(FunctionName=FUNCTION, Name="dev")["FunctionVersion"] == "2"
    sha = client.get_function(FunctionName=FUNCTION, Qualifier="2")["Configuration"]["CodeSha256"]
    record = json.loads((project / "dist/tiny/lambda/package.json").read_text())
    import base64
    assert base64.b64decode(sha).hex() == record["sha256"]


def test_changed_memory_updates_configuration_only(project: Path) -> None:
    assert run("deploy", "tiny").exit_code == 0
    result = run("deploy", "tiny", "--memory", "1024")
    assert result.exit_code == 0, result.output
    assert "MemorySize changed" in result.output and "the zip changed" not in result.output
    client = lam()
    assert client.get_function_configuration(FunctionName=FUNCTION, Qualifier="dev")["MemorySize"] == 1024
    assert client.get_alias(FunctionName=FUNCTION, Name="dev")["FunctionVersion"] == "2"


def test_dry_run_leaves_the_account_untouched(project: Path) -> None:
    result = run("deploy", "tiny", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run:" in result.output and "nothing was changed" in result.output
    assert "create" in result.output
    assert lam().list_functions()["Functions"] == []
    assert boto3.client("iam").list_roles()["Roles"] == []


def test_interrupted_deploy_completes_on_rerun(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The function is created, then the deploy dies before publishing: the next run publishes and aliases."""
    request = deploy_module.load_request("tiny", project / "dist")
    from edgemaas.aws import connect

    aws = connect()
    planned = deploy_module.plan(aws, request)
    planned.steps = [s for s in planned.steps if s.resource in ("role", "function")]
    with pytest.raises(Exception):
        deploy_module.execute(aws, planned)  # no alias to read at the end: the "crash"
    assert lam().get_function(FunctionName=FUNCTION)
    result = run("deploy", "tiny")
    assert result.exit_code == 0, result.output
    assert lam().get_alias(FunctionName=FUNCTION, Name="dev")["FunctionVersion"] == "1"


def test_code_goes_through_s3_with_s3_bucket(project: Path) -> None:
    result = run("deploy", "tiny", "--s3-bucket", "my-artifacts")
    assert result.exit_code == 0, result.output
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="my-artifacts")["Contents"]]
    record = json.loads((project / "dist/tiny/lambda/package.json").read_text())
    assert keys == [f"edgemaas/{FUNCTION}/{record['sha256']}.zip"]
    assert lam().get_function(FunctionName=FUNCTION)["Configuration"]["CodeSize"] == record["zipped_bytes"]
    # the same zip again: nothing to upload, nothing to change
    again = run("deploy", "tiny", "--s3-bucket", "my-artifacts")
    assert "nothing changed" in again.output


def test_zip_over_the_direct_limit_goes_through_a_default_bucket(project: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    big = project / "dist" / "big" / "lambda"
    write_package(project, name="big")
    # incompressible bytes: the zip really is larger than the (lowered) limit
    write_deterministic_zip(big / "function.zip", {"handler.py": HANDLER, "model/blob": os.urandom(300_000)})
    record = json.loads((big / "package.json").read_text())
    record.update(sha256=sha256_file(big / "function.zip"), zipped_bytes=(big / "function.zip").stat().st_size)
    (big / "package.json").write_text(json.dumps(record))
    monkeypatch.setattr(deploy_module, "DIRECT_UPLOAD_LIMIT", 200_000)
    result = run("deploy", "big")
    assert result.exit_code == 0, result.output
    assert "over Lambda's" in result.output
    buckets = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
    assert buckets == ["edgemaas-artifacts-123456789012-us-east-1"]
    assert lam().get_function(FunctionName="edgemaas-big")["Configuration"]["CodeSize"] == record["zipped_bytes"]


def test_layer_is_published_only_when_it_changes(project: Path) -> None:
    write_package(project, layout="layer")
    assert run("deploy", "tiny").exit_code == 0
    layer = "edgemaas-litert-py312-x86_64"
    client = lam()
    assert len(client.list_layer_versions(LayerName=layer)["LayerVersions"]) == 1
    assert "nothing changed" in run("deploy", "tiny").output
    assert len(client.list_layer_versions(LayerName=layer)["LayerVersions"]) == 1
    write_package(project, layout="layer", layer_version="2")
    result = run("deploy", "tiny")
    assert result.exit_code == 0, result.output
    versions = client.list_layer_versions(LayerName=layer)["LayerVersions"]
    assert len(versions) == 2
    newest = max(versions, key=lambda v: v["Version"])
    assert json.loads((project / "dist/tiny/lambda/package.json").read_text())["layer"]["sha256"] in \
        newest["Description"]
    layers = client.get_function_configuration(FunctionName=FUNCTION, Qualifier="dev")["Layers"]
    assert [entry["Arn"] for entry in layers] == [newest["LayerVersionArn"]]


def test_no_url_and_public_auth(project: Path) -> None:
    assert run("deploy", "tiny", "--auth", "NONE").exit_code == 0
    assert lam().get_function_url_config(FunctionName=FUNCTION, Qualifier="dev")["AuthType"] == "NONE"
    policy = json.loads(lam().get_policy(FunctionName=FUNCTION, Qualifier="dev")["Policy"])
    assert any(s["Action"] == "lambda:InvokeFunctionUrl" for s in policy["Statement"])
    result = run("deploy", "tiny", "--no-url")
    assert result.exit_code == 0, result.output
    with pytest.raises(lam().exceptions.ResourceNotFoundException):
        lam().get_function_url_config(FunctionName=FUNCTION, Qualifier="dev")


def test_status_rollback_destroy(project: Path) -> None:
    assert run("deploy", "tiny").exit_code == 0
    write_package(project, version="2")
    assert run("deploy", "tiny").exit_code == 0
    status = run("status", "tiny")
    assert status.exit_code == 0, status.output
    assert "stage dev → version 2" in status.output and "https://" in status.output

    result = run("rollback", "tiny", "--stage", "dev", "--to", "previous")
    assert result.exit_code == 0, result.output
    assert "rolled back edgemaas-tiny:dev: version 2 → 1" in result.output
    assert lam().get_alias(FunctionName=FUNCTION, Name="dev")["FunctionVersion"] == "1"
    result = run("rollback", "tiny", "--to", "previous")
    assert result.exit_code == 1 and "nothing to roll back to" in result.output
    result = run("rollback", "tiny", "--to", "7")
    assert result.exit_code == 1 and "has no version '7' (published versions: 1, 2)" in result.output
    assert run("rollback", "tiny", "--to", "2").exit_code == 0

    refused = run("destroy", "tiny", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert lam().get_function(FunctionName=FUNCTION)
    result = run("destroy", "tiny", "--yes")
    assert result.exit_code == 0, result.output
    assert "deleted function edgemaas-tiny" in result.output and f"kept role {ROLE_NAME}" in result.output
    assert lam().list_functions()["Functions"] == []
    assert boto3.client("iam").get_role(RoleName=ROLE_NAME)


def test_destroy_all_removes_layer_and_role(project: Path) -> None:
    write_package(project, layout="layer")
    assert run("deploy", "tiny").exit_code == 0
    result = run("destroy", "tiny", "--yes", "--all")
    assert result.exit_code == 0, result.output
    assert f"deleted role {ROLE_NAME}" in result.output
    assert lam().list_layer_versions(LayerName="edgemaas-litert-py312-x86_64")["LayerVersions"] == []


def test_operating_a_function_that_is_not_deployed(project: Path) -> None:
    for args in (["status", "tiny"], ["rollback", "tiny"], ["destroy", "tiny", "--yes"]):
        result = run(*args)
        assert result.exit_code == 1
        assert result.output.startswith("Error: edgemaas-tiny is not deployed in us-east-1"), result.output


def test_missing_package(project: Path) -> None:
    result = run("deploy", "nothing")
    assert result.exit_code == 1
    assert result.output.startswith("Error: nothing: no package.json there")


def test_missing_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_package(tmp_path)
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    result = run("deploy", "tiny", "--region", "us-east-1")
    assert result.exit_code == 1
    assert result.output.startswith("Error: no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    result = run("deploy", "tiny")
    assert result.exit_code == 1
    assert result.output.startswith("Error: no AWS region: pass --region")
