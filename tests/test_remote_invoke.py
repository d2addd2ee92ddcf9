"""Remote `edgemaas invoke` and `--batch`, against moto_server (its docker-free Lambda echoes the event, or returns
results queued through /moto-api/static/lambda-simple/response); botocore's Stubber only for what moto cannot
produce: function errors, log tails, throttling and 5xx per batch line, AccessDenied. (Deploy's access errors are
tested under moto's IAM enforcement in test_deploy_faults.py.)"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from click.testing import CliRunner

from edgemaas.aws import invoke as invoke_module
from edgemaas.aws.errors import translate
from edgemaas.cli import cli
from tests.aws_fixtures import MotoServer, moto_server  # noqa: F401 (a fixture)
from tests.test_deploy import write_package

FUNCTION = "edgemaas-tiny"


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def deployed(tmp_path: Path, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:  # noqa: F811
    monkeypatch.chdir(tmp_path)
    write_package(tmp_path)
    result = run("deploy", "tiny", "--stage", "dev")
    assert result.exit_code == 0, result.output
    monkeypatch.setattr(invoke_module, "RETRY_BASE_DELAY", 0.001)
    return moto_server


def _payload(body: object) -> StreamingBody:
    raw = json.dumps(body).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def _stubbed(monkeypatch: pytest.MonkeyPatch) -> tuple[object, Stubber]:
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    monkeypatch.setattr(invoke_module, "invoke_client", lambda aws: client)
    monkeypatch.setattr(invoke_module, "RETRY_BASE_DELAY", 0.001)
    return client, stubber


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


def test_logs_and_function_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_server: MotoServer  # noqa
                                 ) -> None:
    client, stubber = _stubbed(monkeypatch)
    tail = "START RequestId: 1\nTraceback: boom\nEND RequestId: 1\n"
    stubber.add_response("get_alias", {"FunctionVersion": "3", "Name": "dev"}, {"FunctionName": FUNCTION,
                                                                               "Name": "dev"})
    stubber.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "3",
                                    "LogResult": base64.b64encode(tail.encode()).decode(),
                                    "Payload": _payload({"errorMessage": "boom", "errorType": "ValueError"})})
    with stubber:
        result = run("invoke", "tiny", "--data", "{}", "--logs")
    assert result.exit_code == 1
    assert "Traceback: boom" in result.output
    assert "Error: function error (Unhandled): ValueError: boom" in result.output


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


def test_batch_retries_throttling_and_5xx_and_records_what_still_fails(tmp_path: Path) -> None:
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"inputs": [1]}\n{"inputs": [2]}\n')
    # line 1: throttled twice, then a 500, then answered
    stubber.add_client_error("invoke", "TooManyRequestsException", "Rate exceeded", 429)
    stubber.add_client_error("invoke", "TooManyRequestsException", "Rate exceeded", 429)
    stubber.add_client_error("invoke", "ServiceException", "internal", 500)
    stubber.add_response("invoke", {"StatusCode": 200, "Payload": _payload({"predictions": [1]})})
    # line 2: throttled on every attempt
    for _ in range(4):
        stubber.add_client_error("invoke", "TooManyRequestsException", "Rate exceeded", 429)
    with stubber:
        original = invoke_module.RETRY_BASE_DELAY
        invoke_module.RETRY_BASE_DELAY = 0.001
        try:
            first = invoke_module.run_batch(client, FUNCTION, "dev", source, output, concurrency=1, attempts=4)
        finally:
            invoke_module.RETRY_BASE_DELAY = original
    assert (first.succeeded, first.failed) == (1, 1)
    stubber.assert_no_pending_responses()
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert rows[0]["response"] == {"predictions": [1]}
    assert "throttling" in rows[1]["error"] and rows[1]["retryable"] is True


def test_access_denied_names_the_action_and_the_policy() -> None:
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_client_error("invoke", "AccessDeniedException", "User: arn:aws:iam::1:user/u is not authorized", 403)
    with stubber, pytest.raises(Exception) as raised:
        invoke_module.invoke(client, FUNCTION, "dev", {})
    message = str(translate(raised.value))
    # Invoke's IAM action is lambda:InvokeFunction; the statement comes from the minimal policy
    assert message.startswith("access denied: your AWS identity may not call lambda:InvokeFunction (needed by "
                              "Invoke).")
    statement = json.loads(message.split("\n", 1)[1])
    assert statement["Action"] == ["lambda:InvokeFunction"]
    assert statement["Resource"] == "arn:aws:lambda:*:*:function:edgemaas-*"
