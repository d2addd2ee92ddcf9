"""`compress`: every variant made and measured, the gate's choice and rejections, failures recorded not fatal,
models the user brings, and clear errors for bad calibration or eval data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgemaas.compress import run as compressing
from edgemaas.cli import cli
from edgemaas.compress.passes import KERAS_ROOT, Variant
from edgemaas.pipeline import compress_file, compress_spec
from edgemaas.compress.report import REPORT_MD, load_report
from edgemaas.spec import DEFAULT_VARIANTS, Spec
from edgemaas.workspace import Workspace
from tests.unit.test_importing import tiny_onnx
from tests.unit.test_compress import rows

pytestmark = pytest.mark.models("cnn", "linear")  # the built-ins `trained` holds here


def copy_trained(trained: Workspace, name: str, root: Path) -> Workspace:
    """A workspace of its own holding only the trained float model and its data (so tests don't interfere)."""
    ws = Workspace(root)
    shutil.copytree(trained.variant_dir(name, KERAS_ROOT), ws.variant_dir(name, KERAS_ROOT))
    shutil.copy(trained.data_file(name), ws.data_file(name))
    shutil.copy(trained.model_dir(name) / "train.log", ws.model_dir(name) / "train.log")
    return ws


@pytest.fixture(scope="module")
def cnn_card(trained: Workspace, specs: dict[str, Spec], tmp_path_factory: pytest.TempPathFactory):
    ws = copy_trained(trained, "cnn", tmp_path_factory.mktemp("compress-cnn"))
    spec = specs["cnn"].model_copy(deep=True)
    spec.compress.pruning.epochs = 2  # quick fine-tuning: this checks the machinery, not the last point of accuracy
    spec.compress.clustering.epochs = 1
    spec.compress.qat.epochs = 1
    spec.gate.objective = "smallest"  # these tests check the size gate; cost (the default) has tests of its own
    return ws, spec, compress_spec(spec, ws)


def test_every_variant_is_made_and_measured(cnn_card) -> None:
    ws, _, card = cnn_card
    rows = {row["variant"]: row for row in card["variants"]}
    assert set(rows) == set(DEFAULT_VARIANTS)
    for name, row in rows.items():
        assert row["status"] in ("chosen", "passed", "rejected"), (name, row["reason"])
        assert row["size_bytes"] > 0 and 0 < row["gzip_bytes"] <= row["size_bytes"] * 1.01
        assert row["latency_p50_ms"] > 0 and row["runtime"] in ("ai-edge-litert", "onnxruntime")
        assert row["parity_max_abs"] is not None and 0 <= row["sparsity"] <= 1
        assert (ws.variant_dir("cnn", name) / "manifest.json").exists()
    assert rows["tflite-float32"]["size_ratio"] == 1.0 and rows["onnx-float32"]["size_ratio"] == 1.0
    assert rows["tflite-int8"]["size_ratio"] < 0.5
    assert rows["tflite-pruned-int8"]["sparsity"] > 0.6  # 80% of the prunable weights are zero
    assert rows["tflite-float32"]["parity_max_abs"] < 1e-4
    assert rows["onnx-float32"]["parity_max_abs"] < 1e-4


def test_the_gate_chooses_the_smallest_within_budget(cnn_card) -> None:
    _, spec, card = cnn_card
    gate = card["gate"]
    for fmt in ("tflite", "onnx"):
        rows = [r for r in card["variants"] if r["format"] == fmt]
        within = [r for r in rows if r["metric_drop"] <= spec.gate.max_metric_drop]
        best = min(within, key=lambda r: r["gzip_bytes"])
        assert gate["chosen"][fmt] == best["variant"]
        assert best["status"] == "chosen"
        for row in rows:
            if row["metric_drop"] > spec.gate.max_metric_drop:
                assert row["status"] == "rejected"
                assert "exceeds the budget of 1.0 accuracy points" in row["reason"]
    assert gate["default"] == gate["chosen"]["tflite"] and gate["fallback"] == []


def test_report_files_list_every_variant(cnn_card) -> None:
    ws, _, card = cnn_card
    directory = ws.dist / "cnn" / "report"
    markdown = (directory / REPORT_MD).read_text()
    for name in DEFAULT_VARIANTS:
        assert name in markdown
    assert load_report(directory)["variants"] == json.loads(json.dumps(card["variants"]))
    for plot in ("size_vs_metric.png", "latency.png"):
        assert (directory / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_run_reuses_every_variant(cnn_card) -> None:
    ws, spec, _ = cnn_card
    before = {p: p.stat().st_mtime_ns for p in ws.build.glob("cnn/*/manifest.json")}
    compress_spec(spec, ws)
    assert {p: p.stat().st_mtime_ns for p in ws.build.glob("cnn/*/manifest.json")} == before


def test_the_package_uses_the_gates_choice(cnn_card) -> None:
    from edgemaas.pipeline import chosen_variant

    ws, _, card = cnn_card
    assert chosen_variant(ws, "cnn").name == card["gate"]["chosen"]["tflite"]
    assert chosen_variant(ws, "cnn", fmt="onnx").name == card["gate"]["chosen"]["onnx"]
    assert chosen_variant(ws, "cnn", "tflite-float16").name == "tflite-float16"


def crash(source: str, out: str) -> dict:
    """A pass that takes the interpreter down, as a non-unrolled int8 GRU conversion does."""
    import ctypes

    ctypes.string_at(0)
    return {}


def test_a_pass_that_crashes_is_recorded_and_the_run_goes_on(trained: Workspace, specs: dict[str, Spec],
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = copy_trained(trained, "linear", tmp_path)
    real_plan = compressing.plan

    def plan_with_a_crash(wanted, compress, task, root, labelled):
        variants, skipped = real_plan(["tflite-float32"], compress, task, root, labelled)
        doomed = Variant("tflite-crash", "tflite", KERAS_ROOT, crash, "model.tflite")
        orphan = Variant("tflite-orphan", "tflite", "tflite-crash", crash, "model.tflite")
        return [doomed, orphan, *variants], skipped

    monkeypatch.setattr(compressing, "plan", plan_with_a_crash)
    card = compress_spec(specs["linear"], ws)
    by_name = {row["variant"]: row for row in card["variants"]}
    assert by_name["tflite-crash"]["status"] == "failed"
    assert "the process crashed (killed by SIGSEGV)" in by_name["tflite-crash"]["reason"]
    assert by_name["tflite-orphan"] == {**by_name["tflite-orphan"], "status": "skipped",
                                        "reason": "its parent tflite-crash failed"}
    assert by_name["tflite-float32"]["status"] == "chosen"
    assert not ws.variant_dir("linear", "tflite-crash").exists()
    assert "tflite-crash" in (ws.dist / "linear" / "report" / REPORT_MD).read_text()


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Keras classifier you might bring, with calibration inputs and labelled eval data."""
    from edgemaas.tf import keras

    k = keras()
    k.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    model = k.Sequential([k.Input(shape=(6,)), k.layers.Dense(16, activation="relu"),
                          k.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:400], y[:400], epochs=30, verbose=0)
    root = tmp_path_factory.mktemp("bring")
    model.save(root / "classifier.keras")
    np.save(root / "calibration.npy", x[:400])
    np.savez(root / "eval.npz", x=x[400:], y=y[400:])
    return root


def test_a_keras_file_you_bring(classifier_file: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    card = compress_file(classifier_file / "classifier.keras", ws, labels=["low", "mid", "high"],
                         calibration_data=classifier_file / "calibration.npy",
                         eval_data=classifier_file / "eval.npz")
    by_name = {row["variant"]: row for row in card["variants"]}
    assert card["metric"] == "accuracy" and card["metric_source"] == "labels"
    assert by_name["tflite-int8"]["status"] in ("chosen", "passed", "rejected")
    assert by_name["onnx-qdq"]["status"] in ("chosen", "passed", "rejected")
    assert by_name["tflite-pruned"]["status"] == "skipped"
    assert "needs labelled training data" in by_name["tflite-pruned"]["reason"]
    manifest = json.loads((ws.variant_dir("classifier", card["gate"]["default"]) / "manifest.json").read_text())
    assert manifest["postprocessing"]["labels"] == ["low", "mid", "high"]


def test_a_tflite_file_you_bring_skips_what_cannot_apply(trained: Workspace, tmp_path: Path) -> None:
    source = tmp_path / "digits.tflite"
    shutil.copy(trained.variant_dir("cnn", "tflite-float32") / "model.tflite", source)
    with np.load(trained.data_file("cnn")) as data:
        np.save(tmp_path / "calibration.npy", data["x_train"][:50] / 16.0)  # the model takes normalised pixels
    card = compress_file(source, Workspace(tmp_path / "ws"), calibration_data=tmp_path / "calibration.npy")
    by_name = {row["variant"]: row for row in card["variants"]}
    assert card["metric_source"] == "parity" and card["metric"] == "agreement"
    assert by_name["tflite-pruned"]["reason"].startswith("a .tflite file cannot be re-quantized or pruned")
    assert by_name["onnx-float32"]["status"] in ("chosen", "passed")  # tf2onnx reads the .tflite
    assert by_name["onnx-float32"]["metric_value"] == 1.0
    assert (tmp_path / "ws/dist/digits/report/report.md").read_text().count("agreement") >= 1


def test_an_onnx_file_you_bring(tmp_path: Path) -> None:
    source = tiny_onnx(tmp_path / "tiny.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32))
    card = compress_file(source, Workspace(tmp_path / "ws"), calibration_data=tmp_path / "x.npy")
    by_name = {row["variant"]: row for row in card["variants"]}
    assert {"onnx-float16", "onnx-dynamic", "onnx-qdq"} <= {n for n, r in by_name.items() if r["metric_value"]}
    assert by_name["onnx-float32"]["reason"] == "the model you brought is already ONNX float32 (onnx-original)"


@pytest.mark.parametrize("make, option, message", [
    (lambda d: np.save(d / "bad.npy", np.zeros((5, 7), np.float32)), "--calibration-data",
     "inputs have shape [5, 7]; the model takes [N, 6]"),
    (lambda d: np.save(d / "bad.npy", np.array([["a"] * 6] * 3)), "--calibration-data",
     "inputs have dtype <U1; expected numbers (float or int)"),
    (lambda d: (d / "bad.csv").write_text("a,b,c\n1,2,3\n"), "--eval-data",
     "expected 6 columns (features) or 7 (features and a last target column) in every row"),
    (lambda d: np.savez(d / "bad.npz", x=np.zeros((4, 6)), y=np.zeros(3)), "--eval-data", "4 inputs but 3 targets"),
    (lambda d: None, "--eval-data", "no such file"),
])
def test_bad_calibration_or_eval_data_says_what_was_expected(classifier_file: Path, tmp_path: Path, make,
                                                             option: str, message: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path)
    bad = next(iter(sorted(tmp_path.glob("bad.*"))), tmp_path / "missing.npz")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(classifier_file / "classifier.keras"), option, str(bad)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == f"Error: {option} {bad}: {message}"
    assert not (tmp_path / "dist").exists()


def test_a_model_file_needs_data(classifier_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(classifier_file / "classifier.keras")])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("Error: compressing a model you bring needs data: give "
                                                      "--calibration-data")


def test_report_command(cnn_card, monkeypatch: pytest.MonkeyPatch) -> None:
    ws, _, _ = cnn_card
    monkeypatch.chdir(ws.root)
    result = CliRunner().invoke(cli, ["report", "cnn"])
    assert result.exit_code == 0, result.output
    assert "tflite-pruned-int8" in result.output and "size_vs_metric.png" in result.output
    missing = CliRunner().invoke(cli, ["report", "nothing"])
    assert missing.exit_code == 1
    assert "no report in dist/nothing/report; run `edgemaas compress NAME` first" in missing.output
