"""Nothing that looks like a secret goes into a package; the error names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgemaas.errors import UserError
from edgemaas.packaging.awslambda.lambda_zip import package_lambda
from edgemaas.packaging.common.secrets import check_no_secrets, secret_reason
from edgemaas.runtime import read_manifest
from edgemaas.workspace import Workspace

AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documented example key, split so scanners don't flag this file


@pytest.mark.parametrize("name", [
    ".env", "model/.env.production", ".envrc", "x/.aws/credentials", ".aws/config", "home/.ssh/known_hosts",
    "id_rsa", "keys/id_ed25519", "server.pem", "tls.key", "store.p12", "service-account-prod.json",
    ".netrc", ".pypirc", ".npmrc", ".git-credentials", "secrets.yaml", "terraform.tfvars", ".docker/config.json",
])
def test_secret_file_names(name: str) -> None:
    assert secret_reason(name) is not None


@pytest.mark.parametrize("name", [
    "handler.py", "model/model.tflite", "model/manifest.json", "numpy/_core/_multiarray_umath.cpython-311.so",
    "edgemaas/runtime/backends.py", "ai_edge_litert/interpreter.py", "numpy.libs/libscipy_openblas64_.so",
    "keyboard.py", "environment.py", "monkey.json",
])
def test_ordinary_file_names(name: str) -> None:
    assert secret_reason(name, b"ordinary content") is None


@pytest.mark.parametrize("content, what", [
    (b"-----BEGIN RSA PRIVATE KEY-----\nMIIE...", "a private key"),
    (b"-----BEGIN OPENSSH PRIVATE KEY-----\n", "a private key"),
    (b"-----BEGIN PRIVATE KEY-----\n", "a private key"),
    (b'{"id": "' + AWS_KEY_ID.encode() + b'"}', "an AWS access key id"),
    (b"[default]\naws_secret_access_key = abc\n", "an AWS secret access key"),
])
def test_secret_contents(content: bytes, what: str) -> None:
    assert secret_reason("notes.txt", content) == f"it contains {what}"


def test_every_offending_file_is_named() -> None:
    with pytest.raises(UserError) as error:
        check_no_secrets({"handler.py": b"print()", ".env": b"A=1", "model/id_rsa": b"x"})
    assert str(error.value).startswith("refusing to put what looks like a secret into the package:\n"
                                       "  .env: its name is one that holds secrets\n"
                                       "  model/id_rsa: its name is one that holds secrets\n")


def test_lambda_package_refuses_a_manifest_carrying_a_key(trained: Workspace, tmp_path: Path) -> None:
    variant = tmp_path / "variant"
    shutil.copytree(trained.variant_dir("cnn", "tflite-int8"), variant)
    manifest = read_manifest(variant)
    manifest.postprocessing["labels"] = [*manifest.postprocessing["labels"][:-1], AWS_KEY_ID]
    manifest.save(variant)
    out = tmp_path / "out"
    with pytest.raises(UserError) as error:
        package_lambda(variant, out, trained.cache())
    assert f"  model/manifest.json (from {variant / 'manifest.json'}): it contains an AWS access key id" \
        in str(error.value)
    assert not (out / "function.zip").exists() and not (out / "package.json").exists()


def test_lambda_package_refuses_a_model_file_named_like_a_key(trained: Workspace, tmp_path: Path) -> None:
    variant = tmp_path / "variant"
    shutil.copytree(trained.variant_dir("cnn", "tflite-int8"), variant)
    (variant / "model.tflite").rename(variant / "deploy.pem")
    data = json.loads((variant / "manifest.json").read_text())
    data["model"]["file"] = "deploy.pem"
    (variant / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"model/deploy\.pem \(from .*\): its name is one that holds secrets"):
        package_lambda(variant, tmp_path / "out", trained.cache())


def test_edge_bundle_refuses_a_manifest_carrying_a_key(trained: Workspace, tmp_path: Path) -> None:
    from edgemaas.packaging.edge.bundle import package_edge

    variant = tmp_path / "variant"
    shutil.copytree(trained.variant_dir("cnn", "tflite-int8"), variant)
    manifest = read_manifest(variant)
    manifest.provenance["note"] = "[default]\naws_secret_access_key = wJalrXUtnFEMI"
    manifest.save(variant)
    out = tmp_path / "edge"
    with pytest.raises(UserError, match=r"cnn_edge/model/manifest\.json \(from .*\): it contains an AWS secret access "
                                        r"key"):
        package_edge(variant, out, trained.cache())
    assert not list(out.glob("*.tar.gz"))
