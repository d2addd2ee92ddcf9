"""Remote `edgemaas invoke` and `--batch`, for real over HTTP against moto_server (its docker-free Lambda echoes the
event, or returns results queued through /moto-api/static/lambda-simple/response). What moto cannot produce (a
function error with its log tail, throttling and 5xx on chosen batch lines, AccessDenied) comes from
tests.aws_fixtures.FaultProxy in front of it, in Lambda's own wire formats, to edgemaas's own boto3 client. (Deploy's
access errors are tested under moto's IAM enforcement in test_deploy_faults.py.)"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgemaas.aws import connect
from edgemaas.aws import invoke as invoke_module
from edgemaas.aws.invoke import invoke_client, run_batch
from edgemaas.cli import cli
from tests.integration.aws_fixtures import (  # noqa: F401 (fixtures)
    ACCOUNT,
    FaultProxy,
    MotoServer,
    fault_proxy,
    lambda_function_error,
    moto_server,
)
from tests.integration.test_deploy import write_package

FUNCTION = "edgemaas-tiny"


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def deployed(tmp_path: Path, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:  # noqa: F811
    monkeypatch.chdir(tmp_path)
    write_package(tmp_path)
    result = run("deploy", "tiny", "--stage", "dev")
    assert result.exit_code == 0, result.output
    return moto_server


@pytest.fixture
def proxied(deployed: MotoServer, fault_proxy: FaultProxy) -> FaultProxy:  # noqa: F811
    """edgemaas-tiny deployed (alias dev → version 1), and boto3 pointed at a FaultProxy in front of moto."""
    return fault_proxy


def test_invoke_prints_the_payload(deployed: MotoServer) -> None:
    answer = {"model": "tiny", "variant": "tflite-int8", "predictions": [{"label": "8", "p": 0.99}]}
    deployed.queue_lambda_results(answer)
    result = run("invoke", "tiny", "--stage", "dev", "--data", '{"inputs": [[1, 2]]}')
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == answer
    assert "edgemaas-tiny:dev (version 1, us-east-1)" in result.output


def test_invoke_a_rejected_request_exits_1(deployed: MotoServer) -> None:
    deployed.queue_lambda_results({"error": {"type": "InvalidRequest", "message": "expected 8 features"}})
    result = run("invoke", "tiny", "--data", '{"inputs": [[1]]}')
    assert result.exit_code == 1
    assert "Error: the function rejected the request: expected 8 features" in result.output


def test_invoke_a_function_that_is_not_deployed(tmp_path: Path, moto_server: MotoServer,  # noqa: F811
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("invoke", "nothing", "--data", "{}")
    assert result.exit_code == 1
    assert result.output.startswith("Error: edgemaas-nothing is not deployed in us-east-1; deploy it first")


def test_invoke_a_stage_that_is_not_deployed(deployed: MotoServer) -> None:
    result = run("invoke", "tiny", "--stage", "prod", "--data", "{}")
    assert result.exit_code == 1
    assert "Error: edgemaas-tiny has no stage 'prod' (its stages: dev); deploy with --stage prod" in result.output


def test_logs_and_function_error(proxied: FaultProxy) -> None:
    stack = ['  File "/var/task/edgemaas_handler.py", line 41, in handler\n    raise ValueError("boom")\n']
    proxied.respond("lambda:Invoke", *lambda_function_error("ValueError", "boom", stack))
    result = run("invoke", "tiny", "--data", "{}", "--logs")
    assert result.exit_code == 1
    [call] = proxied.attempts("lambda:Invoke")
    assert call.headers["x-amz-log-type"] == "Tail"  # --logs asks for the log tail
    assert "[ERROR] ValueError: boom\nTraceback (most recent call last):\n" + stack[0] in result.output
    assert "REPORT RequestId: " in result.output
    assert "edgemaas-tiny:dev (version 1, us-east-1)" in result.output
    assert "Error: function error (Unhandled): ValueError: boom" in result.stderr


def test_batch_fans_out_records_failures_and_resumes(deployed: MotoServer, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [{"id": f"r{i}", "inputs": [[i]]} for i in range(20)]
    # moto's simple Lambda echoes the event: this one comes back in the handler's rejection shape
    lines[7] = {"id": "r7", "error": {"message": "bad sample"}}
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    output = tmp_path / "out.jsonl"
    result = run("invoke", "tiny", "--batch", str(source), "--output", str(output), "--concurrency", "4")
    assert result.exit_code == 1
    assert "1 of 20 lines failed" in result.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"r{i}" for i in range(20)]
    assert rows[0]["response"] == {"inputs": [[0]]}  # the id is not sent to the function
    assert rows[7]["error"] == "the function rejected the request: bad sample"
    assert sum("error" in row for row in rows) == 1

    # fix the failed line and change an answered one: the re-run retries the first and skips the second
    lines[7] = {"id": "r7", "inputs": [[7]]}
    lines[0] = {"id": "r0", "inputs": [["changed"]]}
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = run("invoke", "tiny", "--batch", str(source), "--output", str(output))
    assert result.exit_code == 0, result.output
    assert "20 lines, 19 answered by an earlier run: 1 answered now, 0 failed" in result.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 20 and not any("error" in row for row in rows)
    assert rows[7]["response"] == {"inputs": [[7]]} and rows[0]["response"] == {"inputs": [[0]]}


def test_batch_lines_without_ids_match_by_line_number(deployed: MotoServer, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"inputs": [1]}\n{"inputs": [2]}\n')
    output = tmp_path / "out.jsonl"
    assert run("invoke", "tiny", "--batch", str(source), "--output", str(output)).exit_code == 0
    assert [json.loads(x)["key"] for x in output.read_text().splitlines()] == ["line:1", "line:2"]
    again = run("invoke", "tiny", "--batch", str(source), "--output", str(output))
    assert "2 answered by an earlier run: 0 answered now" in again.output


def test_batch_retries_throttling_and_5xx_per_line_with_backoff_and_records_what_still_fails(
        proxied: FaultProxy, tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"inputs": [1]}\n{"inputs": [2]}\n')
    first, second = b'{"inputs": [1]}', b'{"inputs": [2]}'  # what the function receives for each line
    # line 1: throttled twice, then a 500, then answered (by moto, echoing it); line 2: throttled on every attempt
    proxied.fail("lambda:Invoke", "throttle", times=2, matching=first)
    proxied.fail("lambda:Invoke", "500", matching=first)
    proxied.fail("lambda:Invoke", "throttle", times=4, matching=second)
    client = invoke_client(connect())
    summary = run_batch(client, FUNCTION, "dev", source, output, concurrency=2, attempts=4)
    assert (summary.succeeded, summary.failed) == (1, 1)
    calls = {line: [s for s in proxied.attempts("lambda:Invoke") if s.body == line] for line in (first, second)}
    assert [s.outcome for s in calls[first]] == ["injected 429", "injected 429", "injected 500", "forwarded 200"]
    assert [s.outcome for s in calls[second]] == ["injected 429"] * 4  # all 4 attempts, then given up
    # Each line backs off on its own: the n-th wait lies in [d/2, d], d = base * 2^n, so the waits grow.
    base = invoke_module.RETRY_BASE_DELAY
    bands = [(base * 2 ** n / 2, base * 2 ** n) for n in range(3)]
    for line, seen in calls.items():
        waits = [later.at - earlier.at for earlier, later in itertools.pairwise(seen)]
        assert all(low <= wait <= high + 0.5 for wait, (low, high) in zip(waits, bands)), (line, waits, bands)
        assert waits[2] > waits[0], (line, waits)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert rows[0]["response"] == {"inputs": [1]} and "error" not in rows[0]
    assert "throttling" in rows[1]["error"] and rows[1]["retryable"] is True
    assert "(4 attempts: Rate exceeded)" in rows[1]["error"], rows[1]["error"]


def test_access_denied_names_the_action_and_the_policy(proxied: FaultProxy) -> None:
    # This message names neither the action nor a 12-digit account: the action comes from the operation, Invoke,
    # whose IAM action is lambda:InvokeFunction; the statement from the minimal policy.
    proxied.fail("lambda:Invoke", "access", message="User: arn:aws:iam::1:user/u is not authorized")
    result = run("invoke", "tiny", "--data", "{}")
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = result.stderr.removeprefix("Error: ")
    assert message.startswith("access denied: your AWS identity may not call lambda:InvokeFunction (needed by "
                              "Invoke).")
    statement = json.loads(message.split("\n", 1)[1])
    assert statement["Action"] == ["lambda:InvokeFunction"]
    assert statement["Resource"] == "arn:aws:lambda:*:*:function:edgemaas-*"
    assert [s.outcome for s in proxied.attempts("lambda:Invoke")] == ["injected 403"]  # not retried

    # AWS's own words name the caller, the action and the resource: the statement is for that account and region.
    proxied.fail("lambda:Invoke", "access", message=(
        f"User: arn:aws:iam::{ACCOUNT}:user/ci is not authorized to perform: lambda:InvokeFunction on resource: "
        f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:{FUNCTION}:dev because no identity-based policy allows the "
        "lambda:InvokeFunction action"))
    result = run("invoke", "tiny", "--data", "{}")
    first, statement = result.stderr.removeprefix("Error: ").strip().split("\n", 1)
    assert first.startswith(f"access denied: your AWS identity (arn:aws:iam::{ACCOUNT}:user/ci) may not call "
                            "lambda:InvokeFunction (needed by Invoke).")
    assert json.loads(statement)["Resource"] == f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:edgemaas-*"
