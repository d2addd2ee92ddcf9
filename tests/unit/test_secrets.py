"""Nothing that looks like a secret goes into a package: what counts as one, and the error names every file."""

from __future__ import annotations

import pytest

from edgemaas.errors import UserError
from edgemaas.secret_scan import check_no_secrets, secret_reason


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
