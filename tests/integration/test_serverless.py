"""Deployment descriptors: the Serverless Framework v3 service and the SAM template rendered from package records,
checked by rendering, by cfn-lint, and by the real Serverless v3 CLI (`serverless package`, offline).

The CLI comes from the repository's package.json (`npm ci`; ./dev.sh test runs it). `serverless package` asks
CloudFormation once whether the stack already holds the layer; a stub endpoint on 127.0.0.1 answers "does not
exist" (what AWS says before a first deploy), and any other AWS call fails the test.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from edgemaas.packaging.awslambda.serverless import render_sam, render_serverless, serverless_name
from tests.unit.test_serverless import REPO, builtin, mixed, write_dummy_artifacts

SERVERLESS_BIN = REPO / "node_modules" / ".bin" / "serverless"
AWS_SDK = REPO / "node_modules" / "aws-sdk"
NPM_HINT = "run `npm ci` in the repository (./dev.sh test does it)"


def cfn_lint(*paths: Path) -> list[dict]:
    """cfn-lint's findings (errors, warnings, informational) for the templates, as JSON records."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())",
                           "--format", "json", *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert proc.returncode & ~(2 | 4 | 8) == 0, f"cfn-lint failed to run:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout or "[]")


def errors(findings: list[dict]) -> list[str]:
    return [f"{f['Rule']['Id']} {f['Filename']}: {f['Message']}" for f in findings if f["Level"] == "Error"]


# -- rendering -------------------------------------------------------------------------------------------------


def test_sam_templates_pass_cfn_lint(tmp_path: Path) -> None:
    (tmp_path / "mixed.yaml").write_text(render_sam(mixed(tmp_path), base_dir=tmp_path, function_url=True))
    (tmp_path / "builtin.yaml").write_text(render_sam(builtin(tmp_path), base_dir=tmp_path))
    findings = cfn_lint(tmp_path / "mixed.yaml", tmp_path / "builtin.yaml")
    assert findings == [], "\n".join(f"{f['Level']} {f['Rule']['Id']}: {f['Message']}" for f in findings)


# -- the real Serverless Framework v3 CLI ----------------------------------------------------------------------


class _StubCloudFormation(http.server.BaseHTTPRequestHandler):
    """CloudFormation's answer for a stack that was never deployed; every request is recorded."""

    requests: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.requests.append(body)
        stack = dict(p.split("=", 1) for p in body.split("&") if "=" in p).get("StackName", "?")
        payload = ('<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/"><Error><Type>Sender'
                   f'</Type><Code>ValidationError</Code><Message>Stack with id {stack} does not exist</Message>'
                   '</Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>').encode()
        self.send_response(400)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def stub_cloudformation() -> Iterator[tuple[str, list[str]]]:
    handler = type("Handler", (_StubCloudFormation,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()


def serverless_package(service_dir: Path, endpoint: str, requests: list[str]) -> tuple[dict, str]:
    """Run `serverless package` in service_dir; the compiled CloudFormation template and the CLI's output."""
    if not SERVERLESS_BIN.exists() or shutil.which("node") is None:
        pytest.fail(f"the Serverless Framework CLI is missing ({SERVERLESS_BIN}): {NPM_HINT}")
    preload = service_dir.parent / "aws-endpoint.cjs"
    preload.write_text("// Send the AWS SDK's CloudFormation calls to the test's stub endpoint.\n"
                       f"require({json.dumps(str(AWS_SDK))}).config.update(\n"
                       "  {cloudformation: {endpoint: process.env.EDGEMAAS_TEST_CFN_ENDPOINT}});\n")
    home = service_dir.parent / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "CI": "1",
           "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off", "SLS_INTERACTIVE_SETUP_DISABLE": "1",
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "NODE_OPTIONS": f"--require {preload}", "EDGEMAAS_TEST_CFN_ENDPOINT": endpoint}
    proc = subprocess.run([str(SERVERLESS_BIN), "package", "--stage", "dev", "--region", "us-east-1"],
                          cwd=service_dir, env=env, capture_output=True, text=True, timeout=180)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"serverless package failed:\n{output}"
    assert requests and all(r.startswith("Action=DescribeStacks&") for r in requests), requests
    # Serverless v3's schema predates python3.12: the runtime is its only complaint about the configuration.
    complaints = [line.strip() for line in output.splitlines() if line.strip().startswith("at '")]
    assert all(c.split("'")[1] == "provider.runtime" or c.split("'")[1].endswith(".compatibleRuntimes.0")
               for c in complaints), output
    template = json.loads((service_dir / ".serverless" / "cloudformation-template-update-stack.json").read_text())
    return template, output


def check_compiled(template: dict, records: list[dict], function_url: bool) -> None:
    resources = template["Resources"]
    by_type: dict[str, dict[str, dict]] = {}
    for logical, resource in resources.items():
        by_type.setdefault(resource["Type"], {})[logical] = resource
    functions = by_type["AWS::Lambda::Function"]
    assert sorted(functions) == sorted(f"{serverless_name(r['model'])}LambdaFunction" for r in records)
    keys = [f["Properties"]["Code"]["S3Key"] for f in functions.values()]
    keys += [layer["Properties"]["Content"]["S3Key"] for layer in by_type.get("AWS::Lambda::LayerVersion", {}).values()]
    assert len(set(keys)) == len(keys), f"artifacts would overwrite each other in S3: {keys}"
    routes = {route["Properties"]["RouteKey"] for route in by_type["AWS::ApiGatewayV2::Route"].values()}
    assert routes == {f"{method} /{r['model']}" for r in records for method in ("POST", "GET")}
    layers = by_type.get("AWS::Lambda::LayerVersion", {})
    for rec in records:
        props = functions[f"{serverless_name(rec['model'])}LambdaFunction"]["Properties"]
        assert props["Runtime"] == f"python{rec['python_version']}" and props["Architectures"] == [rec["arch"]]
        assert props["Handler"] == "handler.handler" and props["MemorySize"] == rec["memory_mb"]
        assert props["Environment"] == {"Variables": {"EDGEMAAS_LOG_LEVEL": "INFO"}}
        tags = {t["Key"]: t["Value"] for t in props["Tags"]}
        assert tags["edgemaas:model"] == rec["model"] and tags["edgemaas:variant"] == rec["variant"]
        if rec["layout"] == "layer":
            (ref,) = props["Layers"]
            layer = layers[ref["Ref"]]["Properties"]  # the Ref names the layer Serverless compiled
            assert layer["LayerName"] == rec["layer"]["name"]
            assert layer["CompatibleRuntimes"] == [props["Runtime"]]
            assert layer["CompatibleArchitectures"] == [rec["arch"]]
        else:
            assert "Layers" not in props
    assert len(by_type.get("AWS::Lambda::Url", {})) == (len(records) if function_url else 0)
    statements = [statement for role in by_type["AWS::IAM::Role"].values()
                  for policy in role["Properties"].get("Policies", [])
                  for statement in policy["PolicyDocument"]["Statement"]]
    actions = {action for s in statements for action in ([s["Action"]] if isinstance(s["Action"], str)
                                                         else s["Action"])}
    assert not [a for a in actions if "*" in a], actions
    assert actions <= {"logs:CreateLogStream", "logs:CreateLogGroup", "logs:TagResource", "logs:PutLogEvents"}
    # ... on the service's own log groups (/aws/lambda/<service>-<stage>*), never on every resource
    resources = [r for s in statements for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])]
    assert resources and all(isinstance(r, dict) and "/aws/lambda/edgemaas-dev" in json.dumps(r) for r in resources), \
        resources
    assert not by_type.get("AWS::IAM::Policy") and not by_type.get("AWS::IAM::ManagedPolicy")


def test_serverless_cli_packages_the_rendered_service(tmp_path: Path,
                                                      stub_cloudformation: tuple[str, list[str]]) -> None:
    service_dir = tmp_path / "service"
    service_dir.mkdir()
    records = mixed(service_dir)
    write_dummy_artifacts(records)
    (service_dir / "serverless.yml").write_text(render_serverless(records, base_dir=service_dir, function_url=True))
    template, _ = serverless_package(service_dir, *stub_cloudformation)
    check_compiled(template, records, function_url=True)
    compiled = service_dir / ".serverless" / "cloudformation-template-update-stack.json"
    assert errors(cfn_lint(compiled)) == []


def test_serverless_cli_packages_the_repository_service(tmp_path: Path,
                                                        stub_cloudformation: tuple[str, list[str]]) -> None:
    """The committed serverless.yml, in a copy of the repository layout with dummy artifacts at its dist/ paths."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "serverless.yml", root / "serverless.yml")
    records = builtin(root)
    write_dummy_artifacts(records)
    template, output = serverless_package(root, *stub_cloudformation)
    check_compiled(template, records, function_url=False)
    assert "Service packaged" in output
    assert errors(cfn_lint(root / ".serverless" / "cloudformation-template-update-stack.json")) == []
