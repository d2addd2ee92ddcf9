"""Nothing that looks like a secret goes into a package; the error names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgemaas.errors import UserError
from edgemaas.packaging.awslambda.lambda_zip import package_lambda
from edgemaas.runtime import read_manifest
from edgemaas.workspace import Workspace
from tests.unit.test_secrets import AWS_KEY_ID

pytestmark = pytest.mark.models("cnn")  # the built-ins `trained` holds here


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
