"""Deploy faults, for real over HTTP: AWS throttling and 5xx (injected by tests.aws_fixtures.FaultProxy in AWS's wire
formats, in front of moto_server), access errors under moto's IAM enforcement, a deploy killed or interrupted half
way; and the IAM policies edgemaas generates (no wildcard actions, resources as narrow as each action allows)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
import yaml
from click.testing import CliRunner

from edgemaas.aws import ROLE_NAME, retries
from edgemaas.aws.policy import (
    ASSUME_ROLE_POLICY,
    actions,
    deploy_policy,
    execution_policy,
    log_policy_name,
    statement_for,
)
from edgemaas.cli import cli
from edgemaas.commands.aws import RERUN_DEPLOY
from edgemaas.commands.aws import deploy_policy as deploy_policy_command
from edgemaas.packaging.awslambda.serverless import render_sam, render_serverless
from tests.integration.aws_fixtures import ACCOUNT, REGION, FaultProxy, MotoServer, fault_proxy, moto_server  # noqa: F401
from tests.integration.test_deploy import FUNCTION, write_package
from tests.integration.test_serverless import cfn_lint
from tests.unit.test_serverless import builtin, mixed, sam_load

LAMBDA_LIST_ONLY = {"lambda:ListLayerVersions", "lambda:ListFunctions"}  # IAM offers them no resource but "*"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_package(tmp_path)
    return tmp_path


def deploy(*args: str) -> Any:
    return CliRunner().invoke(cli, ["deploy", "tiny", *args])


def error(result: Any) -> str:
    """What the CLI said after `Error: ` (stderr; the plan table before it goes to stdout)."""
    assert result.exit_code == 1, result.output
    assert "Error: " in result.stderr and "Traceback" not in result.output, result.output
    return result.stderr[result.stderr.index("Error: ") + len("Error: "):]


def lam() -> Any:
    return boto3.client("lambda")


def published_versions() -> list[str]:
    return [v["Version"] for v in lam().list_versions_by_function(FunctionName=FUNCTION)["Versions"]
            if v["Version"] != "$LATEST"]


def assert_deployed(project: Path) -> None:
    """Exactly one function, one published version, the dev alias on it, holding the packaged zip."""
    assert [f["FunctionName"] for f in lam().list_functions()["Functions"]] == [FUNCTION]
    assert published_versions() == ["1"]
    assert lam().get_alias(FunctionName=FUNCTION, Name="dev")["FunctionVersion"] == "1"
    record = json.loads((project / "dist/tiny/lambda/package.json").read_text())
    code = lam().get_function(FunctionName=FUNCTION, Qualifier="1")["Configuration"]["CodeSha256"]
    assert base64.b64decode(code).hex() == record["sha256"]


# --------------------------------------------------------------------------------------------- retries


def test_throttling_5xx_and_updates_in_progress_are_retried_with_growing_waits(project: Path,
                                                                            fault_proxy: FaultProxy) -> None:  # noqa: F811
    fault_proxy.fail("iam:CreateRole", "throttle")  # 400 Throttling, IAM's XML
    fault_proxy.fail("lambda:CreateFunction", "throttle", times=3)  # 429 TooManyRequestsException
    fault_proxy.fail("lambda:PublishVersion", "conflict")  # 409: an update is in progress
    fault_proxy.fail("lambda:CreateAlias", "503")  # a bare 503 from the load balancer
    fault_proxy.fail("lambda:CreateAlias", "500")  # 500 ServiceException
    result = deploy()
    assert result.exit_code == 0, result.output
    assert [s.outcome for s in fault_proxy.attempts("iam:CreateRole")] == ["injected 400", "forwarded 200"]
    assert [s.outcome for s in fault_proxy.attempts("lambda:PublishVersion")] == ["injected 409", "forwarded 201"]
    assert [s.outcome for s in fault_proxy.attempts("lambda:CreateAlias")] == \
        ["injected 503", "injected 500", "forwarded 201"]
    creates = fault_proxy.attempts("lambda:CreateFunction")
    assert [s.outcome for s in creates] == ["injected 429"] * 3 + ["forwarded 201"]
    # Each wait lies in its backoff band [d/2, d], d = base * 2^n: the bands double, so the waits grow.
    waits = [later.at - earlier.at for earlier, later in itertools.pairwise(creates)]
    bands = [(retries.THROTTLE_BASE_S * 2 ** n / 2, retries.THROTTLE_BASE_S * 2 ** n) for n in range(3)]
    assert all(low <= wait <= high + 0.5 for wait, (low, high) in zip(waits, bands)), (waits, bands)
    assert waits[2] > waits[0]
    assert_deployed(project)


def test_exhausted_retries_name_the_call_and_the_rerun(project: Path, fault_proxy: FaultProxy,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")  # the standard AWS setting caps edgemaas's retries too
    fault_proxy.fail("iam:GetRole", "throttle", times=3)
    said = error(deploy())
    assert said.startswith("AWS kept throttling GetRole (3 attempts: Rate exceeded). Wait a minute, then ")
    assert " ".join(RERUN_DEPLOY.split()) in " ".join(said.split())
    assert len(fault_proxy.attempts("iam:GetRole")) == 3

    fault_proxy.fail("lambda:PublishVersion", "500", times=3)
    said = error(deploy())
    assert said.startswith("AWS failed PublishVersion with ServiceException (3 attempts: An internal error "
                           "occurred); ")
    assert " ".join(RERUN_DEPLOY.split()) in " ".join(said.split())
    assert published_versions() == []  # the function is there, its version is not

    result = deploy()
    assert result.exit_code == 0, result.output
    assert_deployed(project)


def test_a_create_whose_answer_was_lost_is_not_made_twice(project: Path, fault_proxy: FaultProxy) -> None:  # noqa: F811
    """AWS did the call but the answer never arrived: the retry hears "already exists" (409) and the deploy updates
    what is there instead. (moto makes a second function URL rather than refusing it, so URLs are left out.)"""
    lost = {"iam:CreateRole": "200", "lambda:CreateFunction": "201", "lambda:CreateAlias": "201"}
    for operation in lost:
        fault_proxy.fail(operation, "drop")
    result = deploy()
    assert result.exit_code == 0, result.output
    for operation, created in lost.items():
        assert [s.outcome for s in fault_proxy.attempts(operation)] == [f"dropped {created}", "forwarded 409"]
    for then in ("lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration", "lambda:UpdateAlias"):
        assert len(fault_proxy.attempts(then)) == 1, then
    assert_deployed(project)
    assert "nothing changed" in deploy().output


# ------------------------------------------------------------------------------- killed and interrupted


def _deploy_process(proxy: FaultProxy, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url}
    return subprocess.Popen([sys.executable, "-m", "edgemaas", "deploy", "tiny"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop_at(proxy: FaultProxy, cwd: Path, operation: str, forward: bool, sig: int) -> tuple[int, str]:
    """Run a deploy, hold `operation` at the proxy, send `sig` to the deploy there; (exit code, stderr)."""
    held = proxy.hold(operation, forward)
    process = _deploy_process(proxy, cwd)
    try:
        assert held.wait(60), f"the deploy never called {operation}: {process.communicate(timeout=5)}"
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=30)
    finally:
        proxy.release()
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr


def test_a_killed_or_interrupted_deploy_completes_when_run_again(project: Path, fault_proxy: FaultProxy) -> None:  # noqa: F811
    # Killed after AWS created the function, before the deploy heard: no version, no alias yet.
    code, _ = _stop_at(fault_proxy, project, "lambda:CreateFunction", forward=True, sig=signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert lam().get_function(FunctionName=FUNCTION) and published_versions() == []
    # Killed after AWS published version 1, before the deploy heard: the re-run must not publish a second one.
    code, _ = _stop_at(fault_proxy, project, "lambda:PublishVersion", forward=True, sig=signal.SIGKILL)
    assert code == -signal.SIGKILL and published_versions() == ["1"]
    with pytest.raises(lam().exceptions.ResourceNotFoundException):
        lam().get_alias(FunctionName=FUNCTION, Name="dev")
    # Ctrl-C while the alias is being created: a short message, no traceback.
    code, stderr = _stop_at(fault_proxy, project, "lambda:CreateAlias", forward=False, sig=signal.SIGINT)
    assert code == 130, stderr
    message = " ".join(stderr.split())
    assert "deploy stopped (interrupted) during create alias edgemaas-tiny:dev, after 0 of 2 change(s)" in message
    assert "run the same command again and it completes the deploy" in message and "Traceback" not in stderr

    result = deploy()
    assert result.exit_code == 0, result.output
    assert "deployed edgemaas-tiny version 1 → alias dev" in result.output
    assert_deployed(project)
    again = deploy()
    assert again.exit_code == 0 and "nothing changed: edgemaas-tiny:dev is up to date (version 1)" in again.output
    # Each create reached AWS once in all five runs (the held CreateAlias never did).
    assert [s.outcome for s in fault_proxy.attempts("lambda:CreateFunction")] == ["held"]
    assert [s.outcome for s in fault_proxy.attempts("lambda:PublishVersion")] == ["held"]
    assert [s.outcome for s in fault_proxy.attempts("lambda:CreateAlias")] == ["held", "forwarded 201"]


# --------------------------------------------------------------------------------------------- access


def _as_moto_checks_it(policy: dict[str, Any]) -> dict[str, Any]:
    """The same actions on Resource "*": moto authorises Lambda calls, and IAM calls on a role not made yet, against
    the resource "*" only (so an ARN-scoped statement never matches there). The resources are checked by
    test_policies_name_real_actions_on_resources_they_apply_to."""
    return {"Version": policy["Version"], "Statement": [{**s, "Resource": "*"} for s in policy["Statement"]]}


def _user(name: str, policy: dict[str, Any]) -> dict[str, str]:
    iam = boto3.client("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="edgemaas-deploy", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def _without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    statements = [{**s, "Action": [a for a in s["Action"] if a != action]} for s in policy["Statement"]]
    return {**policy, "Statement": [s for s in statements if s["Action"]]}


@pytest.fixture
def enforced(moto_server: MotoServer) -> Iterator[MotoServer]:  # noqa: F811
    yield moto_server
    moto_server.enforce_iam(False)


def test_access_errors_name_the_missing_action_and_the_minimal_policy_suffices(
        project: Path, enforced: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    minimal = _as_moto_checks_it(deploy_policy(operate=False))
    missing = ("iam:CreateRole", "lambda:CreateFunction", "lambda:PublishVersion", "lambda:GetFunction")
    users = {action: _user(f"ci-without-{action.split(':')[1]}", _without(minimal, action)) for action in missing}
    complete = _user("ci", minimal)
    enforced.enforce_iam(True)
    for action, keys in users.items():
        for name, value in keys.items():
            monkeypatch.setenv(name, value)
        first, statement = error(deploy()).strip().split("\n", 1)
        user = f"arn:aws:iam::{ACCOUNT}:user/ci-without-{action.split(':')[1]}"
        assert first.startswith(f"access denied: your AWS identity ({user}) may not call {action} "
                                f"(needed by {action.split(':')[1]}). Add this statement"), first
        assert json.loads(statement) == statement_for(action, deploy_policy(account=ACCOUNT))
    for name, value in complete.items():
        monkeypatch.setenv(name, value)
    result = deploy()
    assert result.exit_code == 0, result.output
    assert "nothing changed" in deploy().output


def test_access_errors_in_aws_own_words(project: Path, fault_proxy: FaultProxy) -> None:  # noqa: F811
    """What moto does not check (iam:PassRole) and how real AWS words a refusal: caller, action, resource."""
    fault_proxy.fail("lambda:CreateFunction", "access", message=(
        f"User: arn:aws:iam::{ACCOUNT}:user/ci is not authorized to perform: iam:PassRole on resource: "
        f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME} because no identity-based policy allows the iam:PassRole action"))
    first, statement = error(deploy()).strip().split("\n", 1)
    assert first.startswith(f"access denied: your AWS identity (arn:aws:iam::{ACCOUNT}:user/ci) may not call "
                            "iam:PassRole (needed by CreateFunction).")
    assert json.loads(statement) == {
        "Sid": "PassExecutionRoleToLambda", "Effect": "Allow", "Action": ["iam:PassRole"],
        "Resource": f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}",
        "Condition": {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}}

    fault_proxy.fail("lambda:PublishVersion", "access", message=(
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci-run is not authorized to perform: "
        f"lambda:PublishVersion on resource: arn:aws:lambda:eu-west-1:{ACCOUNT}:function:{FUNCTION}"))
    first, statement = error(deploy()).strip().split("\n", 1)
    assert f"(arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci-run) may not call lambda:PublishVersion" in first
    assert json.loads(statement)["Resource"] == f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:edgemaas-*"
    assert [s.outcome for s in fault_proxy.attempts("lambda:PublishVersion")] == ["injected 403"]  # not retried


# --------------------------------------------------------------------------------------------- policies


def policy_documents(node: Any) -> Iterator[dict[str, Any]]:
    """Every IAM policy document anywhere in a structure (a template, a policy): each dict with a Statement."""
    if isinstance(node, dict):
        if "Statement" in node:
            yield node
        for value in node.values():
            yield from policy_documents(value)
    elif isinstance(node, list):
        for value in node:
            yield from policy_documents(value)


def generated_policies(tmp_path: Path, moto_role_policy: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    sam = sam_load(render_sam(mixed(tmp_path), base_dir=tmp_path, function_url=True))
    serverless = yaml.safe_load(render_serverless(builtin(tmp_path), base_dir=tmp_path, function_url=True))
    return {
        "deploy policy": [deploy_policy(), deploy_policy(ACCOUNT, REGION, operate=False),
                          json.loads(CliRunner().invoke(deploy_policy_command, ["--account", ACCOUNT]).stdout)],
        "execution role": [ASSUME_ROLE_POLICY, execution_policy(FUNCTION, REGION, ACCOUNT), moto_role_policy],
        "SAM template": list(policy_documents(sam)),
        "serverless.yml": list(policy_documents(serverless)),
    }


def test_no_generated_policy_has_a_wildcard_action(project: Path, moto_server: MotoServer) -> None:  # noqa: F811
    assert deploy().exit_code == 0
    role_policy = boto3.client("iam").get_role_policy(
        RoleName=ROLE_NAME, PolicyName=log_policy_name(FUNCTION, REGION))["PolicyDocument"]
    found = generated_policies(project, role_policy)
    assert len(found["SAM template"]) == 8  # four functions: a trust policy and a log policy each
    assert found["serverless.yml"] == []  # no statements: Serverless's default role, checked once compiled
    for source, documents in found.items():
        for document in documents:
            named = list(actions(document))
            assert named and not [a for a in named if "*" in a], (source, document)
            for statement in document["Statement"]:
                if statement.get("Resource") == "*":
                    assert set(actions({"Statement": [statement]})) <= LAMBDA_LIST_ONLY, (source, statement)
    log_statement = found["execution role"][2]["Statement"][0]
    assert log_statement["Resource"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{FUNCTION}:*"


def test_policies_name_real_actions_on_resources_they_apply_to(tmp_path: Path) -> None:
    """cfn-lint knows every IAM action and the ARN forms it takes (W3037, I3510); a bad control proves it looks."""
    documents = {"DeployPolicy": deploy_policy(ACCOUNT, REGION), "ExecutionPolicy": execution_policy(
        FUNCTION, REGION, ACCOUNT), "BadControl": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["lambda:CreateFunctions"], "Resource": "*"},
            {"Effect": "Allow", "Action": ["lambda:PublishVersion"], "Resource": f"arn:aws:s3:::bucket/{FUNCTION}"}]}}
    template = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {
        name: {"Type": "AWS::IAM::Policy",
               "Properties": {"PolicyName": name, "PolicyDocument": document, "Users": ["ci"]}}
        for name, document in documents.items()}}
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(template))
    findings = cfn_lint(path, "--include-checks", "I")
    flagged = {(f["Rule"]["Id"], f["Location"]["Path"][1]) for f in findings}
    assert flagged == {("W3037", "BadControl"), ("I3510", "BadControl")}, findings
