"""The fifth built-in, `attention` (a small transformer text classifier), through every stage and target.

One `edgemaas build` row (train, compress to the variants the targets ship, gate, every target's cell, the Lambda
zip invoked through awslambdaric) is made once for the module; the tests then check each stage for real: the held-out
accuracy against the GRU model on the very same split, the edge bundle answering raw text over HTTP in a child
process, TensorFlow Lite Micro's own interpreter running the int8 array, the phone packages' NNAPI / Core ML
coverage, and `edgemaas bench` measuring its servers. Only `nlp` comes from the shared `trained` fixture (other
modules train it too), so attention adds one model's training to the suite, not one per module.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
import numpy as np
import pytest

from edgemaas.build import BuildRow, build_one
from edgemaas.compress.records import ReportCard, VariantStatus
from edgemaas.local import invoke_local
from edgemaas.packaging.awslambda.lambda_zip import package_lambda
from edgemaas.packaging.edge.bundle import package_edge
from edgemaas.packaging.mcu.sources import package_mcu
from edgemaas.packaging.mobile.phones import package_mobile
from edgemaas.pipeline import chosen_variant
from edgemaas.runtime import load_model, read_manifest
from edgemaas.spec import load_spec
from edgemaas.workspace import Workspace
from tests.conftest import MODELS, TEST_VARIANTS
from tests.edge_helpers import served_port

pytestmark = pytest.mark.models("nlp")  # the GRU model attention is measured against
NAME = "attention"
FLOAT, INT8, DYNAMIC = "tflite-float32", "tflite-int8", "tflite-dynamic"
SAMPLES = 32


@pytest.fixture(scope="module")
def built(workspace: Workspace, trained: Workspace) -> BuildRow:
    """`edgemaas build attention`, with the variants the targets ship (as `trained_model` makes the others) and
    dynamic-range int8, the one quantized variant that is faster than float32 for this model on x86 LiteRT."""
    spec = load_spec(MODELS / f"{NAME}.yaml").model_copy(deep=True)
    spec.compress.variants = [*TEST_VARIANTS, DYNAMIC]
    return build_one(spec, workspace)


@pytest.fixture(scope="module")
def card(built: BuildRow, workspace: Workspace) -> ReportCard:
    return ReportCard.from_dict(json.loads((workspace.dist / NAME / "report" / "report.json").read_text()))


def held_out(ws: Workspace, name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(ws.data_file(name)) as data:
        return data["x_test"], data["y_test"]


# ---------------------------------------------------------------------------------------------------------------
# Training and compression


def test_small_transformer_at_least_as_accurate_as_the_gru_on_the_same_split(built: BuildRow, workspace: Workspace,
                                                                              trained: Workspace) -> None:
    from edgemaas.tf import load_keras_model

    x_attention, y_attention = held_out(workspace, NAME)
    x_gru, y_gru = held_out(trained, "nlp")
    assert np.array_equal(x_attention, x_gru) and np.array_equal(y_attention, y_gru)
    manifest = read_manifest(workspace.variant_dir(NAME, "keras-float32"))
    gru = read_manifest(trained.variant_dir("nlp", "keras-float32"))
    assert 10_000 <= manifest.provenance["parameters"] <= 100_000
    assert manifest.metrics["held_out"]["samples"] == len(y_gru)
    assert manifest.metrics["held_out"]["accuracy"] >= gru.metrics["held_out"]["accuracy"]
    # Keras' own layers only: the file loads in safe mode, with no custom class registered.
    model = load_keras_model(str(workspace.variant_dir(NAME, "keras-float32") / "model.keras"), trusted=False)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Embedding", "Dense", "Dot", "Softmax", "LayerNormalization", "GlobalAveragePooling1D"} <= kinds
    scores = [layer for layer in model.layers if type(layer).__name__ == "Dot" and "_scores_" in layer.name]
    assert len(scores) == load_spec(MODELS / f"{NAME}.yaml").model.params["heads"]


def test_every_shipping_variant_keeps_the_accuracy_and_int8_is_the_smallest(card: ReportCard) -> None:
    rows = card.rows_by_name()
    assert {*TEST_VARIANTS, DYNAMIC} <= set(rows)
    for name in (*TEST_VARIANTS, DYNAMIC):
        row = rows[name]
        assert row.status not in (VariantStatus.FAILED, VariantStatus.SKIPPED), (name, row.reason)
        assert row.metric_drop is not None and row.metric_drop <= card.gate.max_metric_drop, name
    # No recurrent layer to unroll: full int8 is the smallest file (the GRU's unrolled int8 is not).
    assert rows[INT8].size_bytes < rows["tflite-float16"].size_bytes < rows[FLOAT].size_bytes
    # Per-layer quantization debugging ran on int8 and names the attention layer among those it measured.
    layers = rows[INT8].extra["layers"]["layers"]
    assert any(entry["layer"].startswith("attention_1_") for entry in layers)


def test_ships_a_variant_smaller_and_no_dearer_than_float32(card: ReportCard) -> None:
    rows = card.rows_by_name()
    shipped = rows[card.gate.chosen["tflite"]]
    float_row = rows[FLOAT]
    assert shipped.size_bytes < float_row.size_bytes, (shipped.variant, shipped.reason, rows["tflite-float16"].reason)
    for arch, cost in shipped.extra["lambda"].items():
        assert cost["cost_per_million"] <= float_row.extra["lambda"][arch]["cost_per_million"], arch


# ---------------------------------------------------------------------------------------------------------------
# Targets


def test_build_row_has_every_target(built: BuildRow) -> None:
    assert built.ok, built.problem
    assert set(built.cells) == {"edge", "mcu", "android", "ios"}
    for target, cell in built.cells.items():
        assert cell.status.value == "ok", (target, cell.text)


def test_lambda_answers_raw_text_through_awslambdaric(built: BuildRow, workspace: Workspace) -> None:
    variant_dir = chosen_variant(workspace, NAME)
    package = package_lambda(variant_dir, workspace.lambda_dir(NAME), workspace.cache())
    texts = held_out(workspace, NAME)[0][:SAMPLES].tolist()
    (result,) = invoke_local(Path(package.zip_path), [{"inputs": texts}])
    assert result.function_error is None, result.error_message
    assert result.payload["predictions"] == load_model(variant_dir).predict(texts)
    labels = read_manifest(variant_dir).postprocessing["labels"]
    assert all(p["label"] in labels for p in result.payload["predictions"])


def test_edge_bundle_serves_raw_text(built: BuildRow, workspace: Workspace, tmp_path: Path) -> None:
    variant_dir = chosen_variant(workspace, NAME)
    bundle = package_edge(variant_dir, tmp_path / "edge", workspace.cache())
    with tarfile.open(bundle.tar_path) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    root = tmp_path / "unpacked" / bundle.top_dir
    texts = held_out(workspace, NAME)[0][:SAMPLES].tolist()
    expected = load_model(variant_dir).predict(texts)
    log_path = tmp_path / "serve.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "LANG": "C.UTF-8"}
    with open(log_path, "wb") as log:  # this interpreter has the bundle's two requirements, numpy and LiteRT
        process = subprocess.Popen([sys.executable, "-m", bundle.module, "serve", "--port", "0"], cwd=root,
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        port = served_port(log_path, process)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/predict", body=json.dumps({"inputs": texts}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        body = json.loads(response.read())
        connection.close()
        assert response.status == 200, body
        assert body["predictions"] == expected
    finally:
        process.kill()
        process.wait()


def test_int8_runs_on_tensorflow_lite_micro(built: BuildRow, workspace: Workspace, tmp_path: Path) -> None:
    """TFLM's own interpreter runs the shipped array in the estimated arena and agrees with LiteRT on held-out text.

    TFLM's int8 SOFTMAX and RSQRT kernels are not LiteRT's: outputs may differ by a few int8 steps (measured up to
    5 of 256), so the check is the class each gives and a bound of 8 steps."""
    try:
        from tflite_micro.python.tflite_micro import runtime as tflm
    except ImportError:
        pytest.fail("TensorFlow Lite Micro's Python interpreter is needed: pip install tflite-micro")
    package = package_mcu(workspace.variant_dir(NAME, INT8), tmp_path / "mcu")
    shipped = load_model(tmp_path / "mcu")
    micro = tflm.Interpreter.from_bytes((tmp_path / "mcu" / "model.tflite").read_bytes(),
                                        arena_size=package.arena_bytes)
    texts = held_out(workspace, NAME)[0][:SAMPLES]
    agree = 0
    for i in range(len(texts)):
        (tokens,) = shipped.transform([texts[i:i + 1]])
        feed = np.asarray(tokens, dtype=np.int32)
        micro.set_input(feed, 0)
        micro.invoke()
        got = micro.get_output(0)
        expected = shipped.backend.run([feed])[0]
        assert got.shape == expected.shape and got.dtype == expected.dtype
        assert np.abs(got.astype(np.int32) - expected.astype(np.int32)).max() <= 8
        agree += int(np.argmax(got) == np.argmax(expected))
        micro.reset()
    assert agree >= len(texts) - 1


@pytest.mark.parametrize("platform", ["android", "ios"])
def test_phone_packages_report_accelerator_coverage(built: BuildRow, workspace: Workspace, tmp_path: Path,
                                                    platform: str) -> None:
    import onnxruntime as ort

    tflite = [workspace.variant_dir(NAME, INT8), workspace.variant_dir(NAME, "tflite-float16")]
    package = package_mobile(platform, tflite, workspace.variant_dir(NAME, "onnx-float32"), tmp_path / platform)
    providers = package.usability["execution_providers"]
    wanted = "NNAPI" if platform == "android" else "CoreML MLProgram"
    assert 0 < providers[wanted]["supported_nodes"] <= providers[wanted]["total_nodes"]
    ort_file = Path(package.out_dir) / f"{NAME}.ort"
    session = ort.InferenceSession(str(ort_file), providers=["CPUExecutionProvider"])
    onnx_model = load_model(workspace.variant_dir(NAME, "onnx-float32"))
    texts = held_out(workspace, NAME)[0][:8]
    dtype = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}[session.get_inputs()[0].type]
    for i in range(len(texts)):
        (tokens,) = onnx_model.transform([texts[i:i + 1]])
        feed = np.asarray(tokens, dtype=dtype)
        got = session.run(None, {session.get_inputs()[0].name: feed})[0]
        want = onnx_model.backend.run([feed])[0]
        assert np.allclose(got, want, atol=1e-5)


def test_bench_measures_its_servers(built: BuildRow, workspace: Workspace) -> None:
    from edgemaas.bench import run_bench

    result = run_bench([NAME], workspace, cold_runs=1, warm_requests=5, throughput_requests=5,
                       only=("litert-float32", "litert-int8"))
    for server_id in ("litert-float32", "litert-int8"):
        server = result.server(NAME, server_id)
        assert server is not None and server.measured, (server_id, server and server.note)
