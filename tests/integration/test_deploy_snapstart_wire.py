"""`edgemaas deploy --snapstart` on the wire: what reaches moto_server through the recording proxy
(tests/integration/aws_fixtures.py `FaultProxy`). moto accepts `SnapStart` but does not store it (see
test_deploy_snapstart_memory.py), so the requests themselves are what these tests read: the setting sent with the
function, a version published after it, and the deploy waiting while Lambda takes the snapshot (the published
version is Pending, and cannot be invoked, until then)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgemaas.cli import cli
from tests.integration.aws_fixtures import FaultProxy, MotoServer, fault_proxy, moto_server  # noqa: F401
from tests.integration.test_deploy import FUNCTION, write_package


@pytest.fixture
def project(tmp_path: Path, fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    monkeypatch.chdir(tmp_path)
    write_package(tmp_path)  # a python3.12 package
    return tmp_path


def _operations(proxy: FaultProxy) -> list[str]:
    return [seen.operation for seen in proxy.log]


def test_snapstart_is_sent_with_the_function_and_the_deploy_waits_for_the_snapshot(
        project: Path, fault_proxy: FaultProxy) -> None:  # noqa: F811
    pending = {"FunctionName": FUNCTION, "Version": "1", "State": "Pending", "StateReasonCode": "Creating",
               "SnapStart": {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}}
    fault_proxy.respond("lambda:GetFunctionConfiguration", 200, {"Content-Type": "application/json"},
                        json.dumps(pending).encode())  # the first poll: the snapshot is still being taken
    result = CliRunner().invoke(cli, ["deploy", "tiny", "--snapstart"])
    assert result.exit_code == 0, result.output
    assert "deployed edgemaas-tiny version 1 → alias dev" in result.output
    (create,) = fault_proxy.attempts("lambda:CreateFunction")
    assert json.loads(create.body)["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    operations = _operations(fault_proxy)
    published = operations.index("lambda:PublishVersion")
    # After the publish: polled while Pending (the canned answer), then Active (moto), and only then the alias.
    polls = [seen for seen in fault_proxy.log[published:] if seen.operation == "lambda:GetFunctionConfiguration"]
    assert [seen.outcome for seen in polls] == ["injected 200", "forwarded 200"]
    assert operations.index("lambda:CreateAlias") > published + 2


def test_without_snapstart_the_function_says_none_and_nothing_waits(project: Path,
                                                                    fault_proxy: FaultProxy) -> None:  # noqa: F811
    result = CliRunner().invoke(cli, ["deploy", "tiny"])
    assert result.exit_code == 0, result.output
    (create,) = fault_proxy.attempts("lambda:CreateFunction")
    assert json.loads(create.body)["SnapStart"] == {"ApplyOn": "None"}
    assert fault_proxy.attempts("lambda:PublishVersion")
    assert not fault_proxy.attempts("lambda:GetFunctionConfiguration")
