"""Deployment descriptors: the Serverless Framework v3 service and the SAM template rendered from package records,
checked by rendering (cfn-lint and the real Serverless v3 CLI check them in tests/integration/test_serverless.py)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgemaas.errors import UserError
from edgemaas.packaging.awslambda import serverless
from edgemaas.packaging.awslambda.serverless import (builtin_records, link_artifacts, load_records, logical_id, main,
    render_sam, render_serverless, serverless_name, write_atomic)


REPO = Path(__file__).resolve().parents[2]


BUILTIN = {"linear": "tflite-float32", "cnn": "tflite-int8", "rnn": "tflite-float32", "nlp": "tflite-float32"}


REGENERATE = "python -m edgemaas.packaging.awslambda.serverless --builtin --serverless serverless.yml"


def record(name: str, root: Path, python_version: str = "3.12", arch: str = "x86_64", layout: str = "layer",
           model_format: str = "tflite", variant: str = "tflite-int8", **extra: Any) -> dict:
    """A package record as `edgemaas package NAME --layout LAYOUT` writes it (dist/<name>/lambda/package.json)."""
    runtime = "litert" if model_format == "tflite" else "onnxruntime"
    layer_name = f"edgemaas-{runtime}-py{python_version.replace('.', '')}-{arch}"
    layer = {"name": layer_name, "zip_path": str(root / "dist" / "layers" / f"{layer_name}.zip"),
             "sha256": "1" * 64, "zipped_bytes": 30_000_000, "unzipped_bytes": 90_000_000}
    return {"zip_path": str(root / "dist" / name / "lambda" / "function.zip"), "zipped_bytes": 40_000,
            "unzipped_bytes": 120_000, "sha256": "0" * 64, "handler": "handler.handler",
            "python_version": python_version, "arch": arch, "model": name, "variant": variant,
            "model_format": model_format, "requirements": ["numpy==2.2.6", "ai-edge-litert==1.4.0"], "warnings": [],
            "layout": layout, "layer": layer if layout == "layer" else None, "memory_mb": 512, "timeout_s": 30,
            **extra}


def builtin(root: Path) -> list[dict]:
    return [record(name, root, variant=variant) for name, variant in BUILTIN.items()]


def mixed(root: Path) -> list[dict]:
    """arm64; two models on the LiteRT layer, one ONNX model on its own layer, one self-contained zip."""
    return [record("cnn", root, arch="arm64", model_sha256="ab" * 32),
            record("nlp", root, arch="arm64", variant="tflite-float32", memory_mb=1024, timeout_s=10),
            record("onnx-model", root, arch="arm64", model_format="onnx", variant="onnx-qdq"),
            record("linear", root, arch="arm64", layout="zip", variant="tflite-float32")]


def write_dummy_artifacts(records: list[dict]) -> None:
    """Small but real zips wherever the records point, and the <name>.zip links Serverless uploads."""
    for rec in records:
        zips = [(Path(rec["zip_path"]), "handler.py")]
        if rec.get("layer"):
            zips.append((Path(rec["layer"]["zip_path"]), "python/edgemaas_dummy.py"))
        for path, member in zips:
            path.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr(member, f"# {rec['model']}\n")
    link_artifacts(records)


def sls_load(text: str) -> dict:
    return yaml.safe_load(text)


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsics (!Ref, !Sub, !GetAtt) as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def sam_load(text: str) -> dict:
    return yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


def test_logical_ids_are_titlecase_alphanumerics() -> None:
    assert logical_id("tflite-int8") == "TfliteInt8"
    assert logical_id("edgemaas-litert-py312-x86_64") == "EdgemaasLitertPy312X8664"
    assert logical_id("cnn") == "Cnn"
    assert serverless.serverless_layer_ref("EdgemaasLitertPy312X8664") == "EdgemaasLitertPy312X8664LambdaLayer"
    assert serverless.serverless_layer_ref("my-layer_x") == "MyDashlayerUnderscorexLambdaLayer"  # Serverless's rule
    assert serverless_name("onnx-model") == "OnnxDashmodel"
    with pytest.raises(ValueError, match="no letters or digits"):
        logical_id("--")


def test_serverless_service_for_layer_packages(tmp_path: Path) -> None:
    text = render_serverless(builtin(tmp_path), service="models", region="eu-west-1", stage="prod", base_dir=tmp_path)
    config = sls_load(text)
    assert config["service"] == "models" and config["frameworkVersion"] == "3"
    provider = config["provider"]
    assert provider == {"name": "aws", "runtime": "python3.12", "architecture": "x86_64", "stage": "prod",
                        "region": "eu-west-1", "environment": {"EDGEMAAS_LOG_LEVEL": "INFO"}}
    assert "iam" not in provider  # the default role: logs only
    assert config["package"] == {"individually": True}
    assert config["layers"] == {"EdgemaasLitertPy312X8664": {
        "name": "edgemaas-litert-py312-x86_64",
        "description": "edgemaas inference runtime for python3.12 x86_64 (numpy and the model runtime)",
        "package": {"artifact": "dist/layers/edgemaas-litert-py312-x86_64.zip"},
        "compatibleRuntimes": ["python3.12"], "compatibleArchitectures": ["x86_64"]}}
    assert list(config["functions"]) == ["cnn", "linear", "nlp", "rnn"]
    cnn = config["functions"]["cnn"]
    assert cnn["handler"] == "handler.handler" and cnn["memorySize"] == 512 and cnn["timeout"] == 30
    assert cnn["package"] == {"artifact": "dist/cnn/lambda/cnn.zip"}  # Serverless uploads by file name
    assert cnn["layers"] == [{"Ref": "EdgemaasLitertPy312X8664LambdaLayer"}]
    assert cnn["events"] == [{"httpApi": {"method": "POST", "path": "/cnn"}},
                             {"httpApi": {"method": "GET", "path": "/cnn"}}]
    assert cnn["tags"] == {"edgemaas:model": "cnn", "edgemaas:variant": "tflite-int8"}  # no sha256 in the record
    assert "url" not in cnn
    assert "edgemaas package cnn --layout layer --python-version 3.12 --arch x86_64" in text


def test_serverless_service_arm64_zip_layout_function_url_and_sha_tag(tmp_path: Path) -> None:
    records = [record("linear", tmp_path, arch="arm64", layout="zip", model_sha256="cd" * 32),
               record("rnn", tmp_path, arch="arm64", layout="zip", memory_mb=256, timeout_s=10)]
    config = sls_load(render_serverless(records, base_dir=tmp_path / "deploy", function_url=True))
    assert config["provider"]["architecture"] == "arm64"
    assert "layers" not in config
    linear = config["functions"]["linear"]
    assert "layers" not in linear and linear["url"] is True
    assert linear["package"]["artifact"] == "../dist/linear/lambda/linear.zip"  # relative to base_dir
    assert linear["tags"]["edgemaas:model-sha256"] == "cd" * 32
    assert (config["functions"]["rnn"]["memorySize"], config["functions"]["rnn"]["timeout"]) == (256, 10)


def test_relative_record_paths_are_taken_from_the_current_directory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = sls_load(render_serverless(builtin(Path(".")), base_dir=tmp_path))
    assert config["functions"]["nlp"]["package"]["artifact"] == "dist/nlp/lambda/nlp.zip"


@pytest.mark.parametrize("key, values, message", [
    ("python_version", ("3.11", "3.12"),
     r"the packages disagree on python_version: 3\.11 \(cnn\); 3\.12 \(linear, nlp, rnn\)\. .*--python-version"),
    ("arch", ("arm64", "x86_64"),
     r"the packages disagree on arch: arm64 \(cnn\); x86_64 \(linear, nlp, rnn\)\. .*--arch"),
])
def test_mismatched_packages_are_refused(tmp_path: Path, key: str, values: tuple[str, str], message: str) -> None:
    records = builtin(tmp_path)
    records[1][key] = values[0]  # cnn
    for rec in records[:1] + records[2:]:
        rec[key] = values[1]
    with pytest.raises(ValueError, match=message):
        render_serverless(records, base_dir=tmp_path)
    with pytest.raises(ValueError, match=message):
        render_sam(records, base_dir=tmp_path)


def test_bad_records_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no package records"):
        render_serverless([])
    with pytest.raises(ValueError, match="'cnn' appears twice"):
        render_serverless([record("cnn", tmp_path), record("cnn", tmp_path)])
    with pytest.raises(ValueError, match="layout 'image'"):
        render_serverless([record("cnn", tmp_path, layout="image", zip_path="")])
    with pytest.raises(ValueError, match="python_version '312' is not like 3.12"):
        render_serverless([record("cnn", tmp_path, python_version="312")])
    clash = [record("cnn", tmp_path), record("edgemaas-litert-py312-x86_64", tmp_path)]
    clash[1]["zip_path"] = str(tmp_path / "dist" / "layers" / "function.zip")  # -> layers/<name>.zip: the layer's
    with pytest.raises(ValueError, match="same S3 key"):
        render_serverless(clash, base_dir=tmp_path)


def test_sam_template(tmp_path: Path) -> None:
    template = sam_load(render_sam(mixed(tmp_path), base_dir=tmp_path, stage="test", function_url=True))
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert template["Parameters"]["Stage"]["Default"] == "test"
    assert template["Globals"]["Function"]["Runtime"] == "python3.12"
    assert template["Globals"]["Function"]["Architectures"] == ["arm64"]
    resources = template["Resources"]
    layers = {k: v for k, v in resources.items() if v["Type"] == "AWS::Serverless::LayerVersion"}
    assert sorted(layers) == ["EdgemaasLitertPy312Arm64Layer", "EdgemaasOnnxruntimePy312Arm64Layer"]
    assert layers["EdgemaasLitertPy312Arm64Layer"]["Properties"] == {
        "LayerName": "edgemaas-litert-py312-arm64",
        "Description": "edgemaas inference runtime for python3.12 arm64 (numpy and the model runtime)",
        "ContentUri": "dist/layers/edgemaas-litert-py312-arm64.zip", "CompatibleRuntimes": ["python3.12"],
        "CompatibleArchitectures": ["arm64"], "RetentionPolicy": "Delete"}
    cnn = resources["CnnFunction"]["Properties"]
    assert cnn["CodeUri"] == "dist/cnn/lambda/function.zip"  # SAM keys uploads by content: no link needed
    assert cnn["Layers"] == [{"Ref": "EdgemaasLitertPy312Arm64Layer"}]
    assert cnn["FunctionUrlConfig"] == {"AuthType": "NONE"}
    assert cnn["Tags"]["edgemaas:model-sha256"] == "ab" * 32
    assert {e["Properties"]["Method"] + " " + e["Properties"]["Path"] for e in cnn["Events"].values()} == \
        {"POST /cnn", "GET /cnn"}
    # Its own role, which may write to its own log group only (not SAM's default: every log group).
    assert "Policies" not in cnn and cnn["Role"] == {"Fn::GetAtt": ["CnnRole", "Arn"]}
    assert cnn["LoggingConfig"] == {"LogGroup": {"Ref": "CnnLogGroup"}}
    assert resources["CnnLogGroup"]["Properties"] == {"LogGroupName": {"Fn::Sub": "/aws/lambda/${AWS::StackName}-cnn"}}
    role = resources["CnnRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    (policy,) = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": {"Fn::GetAtt": ["CnnLogGroup", "Arn"]}}]
    assert sorted(k for k, v in resources.items() if v["Type"] == "AWS::IAM::Role") == \
        ["CnnRole", "LinearRole", "NlpRole", "OnnxModelRole"]
    assert resources["OnnxModelFunction"]["Properties"]["Layers"] == [{"Ref": "EdgemaasOnnxruntimePy312Arm64Layer"}]
    assert "Layers" not in resources["LinearFunction"]["Properties"]
    assert (resources["NlpFunction"]["Properties"]["MemorySize"], resources["NlpFunction"]["Properties"]["Timeout"]) \
        == (1024, 10)
    assert "HttpApiUrl" in template["Outputs"] and "CnnFunctionUrl" in template["Outputs"]


def test_write_atomic_and_links(tmp_path: Path) -> None:
    target = tmp_path / "out" / "serverless.yml"
    write_atomic(target, "a: 1\n")
    write_atomic(target, "a: 2\n")
    assert target.read_text() == "a: 2\n" and os.listdir(target.parent) == ["serverless.yml"]
    records = builtin(tmp_path)
    write_dummy_artifacts(records)
    alias = tmp_path / "dist" / "cnn" / "lambda" / "cnn.zip"
    assert alias.is_symlink() and os.readlink(alias) == "function.zip"
    assert link_artifacts(records) == [Path(r["zip_path"]).with_name(f"{r['model']}.zip") for r in records]
    Path(records[1]["zip_path"]).write_bytes(b"repackaged")  # the link follows a new function.zip
    assert alias.read_bytes() == b"repackaged"


def test_load_records(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    with pytest.raises(UserError, match=r"no Lambda packages in .*edgemaas package NAME --layout layer "
                                        r"--python-version 3\.12"):
        load_records(dist, None)
    records = builtin(tmp_path)
    write_dummy_artifacts(records)
    for rec in records:
        (Path(rec["zip_path"]).parent / "package.json").write_text(json.dumps(rec))
    assert [r["model"] for r in load_records(dist, None)] == ["cnn", "linear", "nlp", "rnn"]
    assert load_records(dist, ["nlp"]) == [records[3]]
    with pytest.raises(UserError) as missing:
        load_records(dist, ["cnn", "mobilenet"])
    assert str(missing.value) == (
        f"no Lambda package for 'mobilenet' ({dist / 'mobilenet' / 'lambda' / 'package.json'} is missing): make it "
        "with `edgemaas package mobilenet --layout layer --python-version 3.12`")
    Path(records[0]["layer"]["zip_path"]).unlink()
    with pytest.raises(UserError, match=r"edgemaas-litert-py312-x86_64\.zip is missing; remake the package with "
                                        r"`edgemaas package linear --layout layer"):
        load_records(dist, ["linear"])
    (dist / "cnn" / "lambda" / "package.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable package record"):
        load_records(dist, ["cnn"])


def test_main_writes_both_files_and_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    records = builtin(Path("."))
    write_dummy_artifacts(records)
    for rec in records:
        (Path(rec["zip_path"]).parent / "package.json").write_text(json.dumps(rec))
    for rec in records:
        Path(rec["zip_path"]).with_name(f"{rec['model']}.zip").unlink()
    assert main(["cnn", "nlp", "--serverless", "serverless.yml", "--sam", "template.yaml", "--function-url"]) == 0
    config = sls_load(Path("serverless.yml").read_text())
    assert sorted(config["functions"]) == ["cnn", "nlp"] and config["functions"]["cnn"]["url"] is True
    regenerate = "python -m edgemaas.packaging.awslambda.serverless cnn nlp --serverless serverless.yml --sam template.yaml " \
                 "--function-url"
    assert regenerate in Path("serverless.yml").read_text() and regenerate in Path("template.yaml").read_text()
    resources = sam_load(Path("template.yaml").read_text())["Resources"]
    assert sorted(resources) == ["CnnFunction", "CnnLogGroup", "CnnRole", "EdgemaasLitertPy312X8664Layer", "HttpApi",
                                 "NlpFunction", "NlpLogGroup", "NlpRole"]
    assert Path("dist/cnn/lambda/cnn.zip").is_symlink() and not Path("dist/linear/lambda/linear.zip").exists()
    assert main(["mobilenet", "--serverless", "serverless.yml"]) == 1
    assert "Error: no Lambda package for 'mobilenet'" in capsys.readouterr().err


def test_committed_serverless_yml_is_the_rendered_service() -> None:
    """serverless.yml at the repository root never drifts from templates/serverless.yml.j2. To regenerate it:
    `python -m edgemaas.packaging.awslambda.serverless --builtin --serverless serverless.yml` at the repository root."""
    expected = render_serverless(builtin(REPO), base_dir=REPO, command=REGENERATE)
    assert (REPO / "serverless.yml").read_text() == expected, f"serverless.yml is stale: run `{REGENERATE}`"
    assert render_serverless(builtin_records(REPO), base_dir=REPO, command=REGENERATE) == expected
