"""`edgemaas compress` on models with several inputs or dynamic shapes: data as a .npz keyed by input name, the ONNX
passes that apply measured by parity over every output, the others skipped with the reason; every variant timed
in fresh processes on one request of that feed, priced for Lambda, and gated like any other model's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgemaas.cli import cli
from edgemaas.compress.cost import load_prices
from edgemaas.compress.latency import LAMBDA_THREADS, RUNS_PER_PROCESS
from edgemaas.compress.records import VariantResult, VariantStatus
from edgemaas.compress.run import gate_variants, measurably_slower
from edgemaas.pipeline import compress_file
from edgemaas.spec import GateSection, Spec
from edgemaas.workspace import Workspace
from tests.tensor_models import ONNX_OPSET, detector_onnx, vad_onnx

MEASURED_OR_SKIPPED = ("chosen", "passed", "rejected", "skipped")


def _vad_feed(path: Path, drop: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"input": rng.standard_normal((4, 512)).astype(np.float32),
              "state": rng.standard_normal((2, 4, 16)).astype(np.float32), "sr": np.array(16000, np.int64)}
    arrays.pop(drop, None)
    np.savez(path, **arrays)
    return path


def _report(root: Path, name: str) -> dict:
    return json.loads((root / "dist" / name / "report" / "report.json").read_text())


@pytest.fixture(scope="module")
def compressed_vad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`edgemaas compress vad.onnx` with one feed for calibration and evaluation, run once for this module's tests:
    (the folder it ran in, its output)."""
    root = tmp_path_factory.mktemp("vad")
    model = vad_onnx(root / "vad.onnx")
    feed = _vad_feed(root / "feed.npz")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        result = CliRunner().invoke(cli, ["compress", str(model), "--calibration-data", str(feed), "--eval-data",
                                          str(feed)])
    assert result.exit_code == 0, result.output
    return root, result.output


def test_a_three_input_model_is_compressed_with_a_feed_per_input_name(compressed_vad: tuple[Path, str]) -> None:
    tmp_path, output = compressed_vad
    assert "Traceback" not in output
    card = _report(tmp_path, "vad")
    assert card["metric"] == "output_rmse" and card["metric_source"] == "parity"
    rows = {row["variant"]: row for row in card["variants"]}
    for name in ("onnx-float16", "onnx-dynamic", "onnx-qdq"):
        assert rows[name]["status"] in MEASURED_OR_SKIPPED, rows[name]
        if rows[name]["status"] != "skipped":
            assert rows[name]["metric_value"] >= 0 and rows[name]["size_bytes"] > 0
            assert any("output " in n and "stateN" in n for n in rows[name]["notes"]), rows[name]["notes"]
    assert rows["onnx-float16"]["metric_value"] < 0.01  # half precision barely moves a sigmoid and a tanh
    assert rows["onnx-float32"]["reason"] == "the model you brought is already ONNX float32 (onnx-original)"
    assert rows["tflite-int8"]["status"] == "skipped" and "cannot become TFLite" in rows["tflite-int8"]["reason"]
    markdown = (tmp_path / "dist" / "vad" / "report" / "report.md").read_text()
    for tensor in ("input `input [batch, samples]`", "input `state [2, batch, 16]`", "input `sr []`",
                   "output `output [batch, 1]`", "output `stateN [2, batch, 16]`"):
        assert f"- {tensor}" in markdown


def test_a_dynamic_shape_model_gets_parity_over_both_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = detector_onnx(tmp_path / "detector.onnx")
    np.savez(tmp_path / "images.npz", images=np.random.default_rng(1).standard_normal((3, 3, 32, 48), np.float32))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(model), "--calibration-data", str(tmp_path / "images.npz")])
    assert result.exit_code == 0, result.output
    rows = {row["variant"]: row for row in _report(tmp_path, "detector")["variants"]}
    assert {rows[n]["status"] for n in ("onnx-float16", "onnx-dynamic", "onnx-qdq")} <= set(MEASURED_OR_SKIPPED)
    notes = " ".join(rows["onnx-dynamic"]["notes"])
    assert "out_0" in notes and "out_1" in notes


def test_a_feed_missing_an_input_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = vad_onnx(tmp_path / "vad.onnx")
    bad = _vad_feed(tmp_path / "bad.npz", drop="state")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(model), "--calibration-data", str(bad)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: --calibration-data {bad}: missing input(s) state; it holds input, sr, the model takes one array "
        "per input: input, state, sr")
    assert "Traceback" not in result.output
    assert not (tmp_path / "dist" / "vad" / "report").exists()


def test_a_dynamic_width_tflite_file_goes_through_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # TensorFlow builds the .tflite in a child process; this process never imports it.
    code = "import sys; from pathlib import Path; from tests.tensor_models import textline_tflite; " \
           "textline_tflite(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "textline.tflite")], check=True,
                   cwd=Path(__file__).resolve().parents[2], capture_output=True, timeout=300)
    np.savez(tmp_path / "lines.npz", line=np.random.default_rng(2).standard_normal((2, 8, 20, 3), np.float32))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(tmp_path / "textline.tflite"), "--calibration-data",
                                      str(tmp_path / "lines.npz")])
    assert result.exit_code == 0, result.output
    rows = {row["variant"]: row for row in _report(tmp_path, "textline")["variants"]}
    assert rows["onnx-float32"]["status"] in MEASURED_OR_SKIPPED[:3]
    assert rows["onnx-float32"]["metric_value"] < 1e-3  # the export itself keeps every output
    assert {rows[n]["status"] for n in ("onnx-float16", "onnx-dynamic", "onnx-qdq")} <= set(MEASURED_OR_SKIPPED)
    assert rows["tflite-int8"]["status"] == "skipped" and rows["tflite-int8"]["reason"]
    # The ONNX variants take and give the names callers use on the original (its signature's), not tf2onnx's
    # tensor names (serving_default_line:0): a request that works on the .tflite works on what ships.
    from edgemaas.runtime import read_manifest

    for variant in ("onnx-float32", "onnx-float16", "onnx-dynamic"):
        manifest = read_manifest(tmp_path / "build" / "textline" / variant)
        assert [t.public_name for t in manifest.inputs] == ["line"], variant
        assert [t.public_name for t in manifest.outputs] == ["logits"], variant


def _timed(card: dict) -> dict[str, dict]:
    return {row["variant"]: row for row in card["variants"] if row["status"] != "skipped" and row["size_bytes"]}


def test_every_variant_of_a_three_input_model_is_timed_and_priced(compressed_vad: tuple[Path, str]) -> None:
    tmp_path, output = compressed_vad
    card = _report(tmp_path, "vad")
    rows = _timed(card)
    # The model brought is ONNX float32: it is a row, the one its ONNX variants are timed and priced against.
    assert {"onnx-original", "onnx-float16", "onnx-dynamic", "onnx-qdq"} <= set(rows)
    request = load_prices().request_per_million
    for name, row in rows.items():
        latency = row["latency"]
        assert latency["p50_ms"] == row["latency_p50_ms"] > 0, name
        assert latency["ci95_ms"][0] <= row["latency_p50_ms"] <= latency["ci95_ms"][1], name
        assert latency["samples"] == RUNS_PER_PROCESS * latency["processes"] and latency["processes"] >= 2, name
        assert latency["threads"] == LAMBDA_THREADS and latency["peak_rss_mb"] > 0, name
        for arch in ("x86_64", "arm64"):
            cell = row["lambda"][arch]
            assert cell["memory_mb"] >= 128 and cell["billed_ms"] >= 1, (name, arch)
            assert cell["cost_per_million"] > request, (name, arch)  # the request fee plus some GB-seconds
    # One request of the feed (batch 4): the first along each input's batch dimension, wherever the file puts it.
    assert card["timed_request"] == ["input [1, 512]", "state [2, 1, 16]", "sr []"]
    # An .onnx file cannot become TFLite: no TFLite choice, and no "the float model ships" for it.
    assert card["gate"]["fallback"] == [] and "tflite" not in card["gate"]["chosen"]
    assert "No variant passed the gate for tflite" not in output
    assert card["machine"]["arch"] and card["machine"]["model"]
    priced = card["gate"]["lambda"]["formats"]["onnx"]
    assert priced["variant"] == card["gate"]["chosen"]["onnx"] and priced["float_variant"] == "onnx-original"
    assert priced["costs"]["x86_64"] and priced["float_costs"]["x86_64"]
    markdown = (tmp_path / "dist" / "vad" / "report" / "report.md").read_text()
    assert "## Lambda cost per 1M requests" in markdown
    assert "One timed request, from the eval feed: `input [1, 512]`, `state [2, 1, 16]`, `sr []`." in markdown
    for name in rows:
        assert f"| {name} | " in markdown.split("## Lambda cost per 1M requests")[1] or \
            f"| **{name}** | " in markdown.split("## Lambda cost per 1M requests")[1], name
    assert (tmp_path / "dist" / "vad" / "report" / "cost_vs_metric.png").stat().st_size > 0


def _save_graph(graph: object, path: Path) -> Path:
    """An ONNX graph saved as a checked model at the opset and IR the tensor-model tests use (IR 9: onnxruntime 1.16)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _two_input_convnet(path: Path) -> Path:
    """images [batch, 3, 32, 32] through two 3x3 convolutions, times a per-sample scale [batch, 1]: convolutions are
    where dynamic int8 (ConvInteger) can run slower than float32 on an x86 CPU."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weights = [numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)
               for name, shape, scale in (("w1", (32, 3, 3, 3), 0.3), ("w2", (32, 32, 3, 3), 0.1),
                                          ("w3", (32, 4), 0.3))]
    nodes = [helper.make_node("Conv", ["images", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("ReduceMean", ["r2"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w3"], ["logits"]),
             helper.make_node("Mul", ["logits", "scale"], ["score"])]
    graph = helper.make_graph(
        nodes, "convpair", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 32, 32]),
                            helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 4])], weights)
    return _save_graph(graph, path)


def test_the_gate_never_ships_a_variant_measurably_slower_than_float32(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model = _two_input_convnet(tmp_path / "convpair.onnx")
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "feed.npz", images=rng.standard_normal((8, 3, 32, 32)).astype(np.float32),
             scale=rng.uniform(0.5, 2.0, (8, 1)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(model), "--calibration-data", str(tmp_path / "feed.npz")])
    assert result.exit_code == 0, result.output
    card = _report(tmp_path, "convpair")
    assert card["gate"]["objective"] == "cost" and card["timed_request"] == ["images [1, 3, 32, 32]", "scale [1, 1]"]
    # onnx-qdq's per-layer error (onnxruntime's qdq_loss_debug on the whole two-input feed), by the graph's names:
    # the two convolutions' Relus (dropped by the quantizer, their tensors written by the Conv) are not charged the
    # negative half of their activations as noise.
    layers = {entry["layer"]: entry for entry in _timed(card)["onnx-qdq"]["layers"]["layers"]}
    assert layers and set(layers) <= {"r1", "r2", "pooled", "logits", "score"}, layers
    assert all(0 <= entry["error"] < 0.1 for entry in layers.values()), layers
    worst = max(layers, key=lambda name: layers[name]["error"])
    markdown = (tmp_path / "dist" / "convpair" / "report" / "report.md").read_text()
    assert "## Per-layer quantization error" in markdown and f"| {worst} | {layers[worst]['op']} |" in markdown
    float_row = VariantResult.from_dict(_timed(card)["onnx-original"])
    shipped = VariantResult.from_dict(_timed(card)[card["gate"]["chosen"]["onnx"]])
    assert not measurably_slower(shipped, float_row)
    # The real gate on the real rows, with a budget every variant's parity meets: only time and cost decide.
    for objective in ("cost", "fastest", "smallest"):
        rows = [VariantResult.from_dict(row) for row in card["variants"]]
        for row in rows:  # back to what the gate saw: measured, no verdict
            if row.status in (VariantStatus.CHOSEN, VariantStatus.PASSED, VariantStatus.REJECTED):
                row.status, row.reason = VariantStatus.MEASURED, ""
        selection = gate_variants(rows, GateSection(max_metric_drop=100.0, objective=objective), card["task"],
                                  False, "onnx-original")
        by_name = {row.variant: row for row in rows}
        measured = [r for r in rows if r.format == "onnx" and r.latency_p50_ms is not None]
        assert len(measured) == 4, [r.variant for r in measured]  # the original and its three variants
        slower = [r for r in measured if r is not by_name["onnx-original"] and measurably_slower(r, float_row)]
        if objective == "smallest":  # size alone decides: the smallest file ships, however slow
            assert selection.chosen["onnx"] == min(measured, key=lambda r: (r.gzip_bytes, r.variant)).variant
            continue
        assert not measurably_slower(by_name[selection.chosen["onnx"]], float_row), objective
        for row in slower:
            assert row.status is VariantStatus.REJECTED, (objective, row.variant)
            assert row.reason.startswith("slower than onnx-original ("), (objective, row.reason)


def _two_input_spiky(path: Path) -> Path:
    """probs = softmax(relu(relu(a @ W_spiky) + b @ W_side) @ W_hidden ... @ W_head), nodes named "<layer>/<op>".
    W_spiky's row for a's feature 0 (always 0 in the data) is 1e4: harmless in float, it stretches every column's
    int8 scale until its real weights round to 0 (as in test_selective_precision.py, with two inputs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    spiky = (rng.normal(size=(8, 32)) * 0.3).astype(np.float32)
    spiky[0, :] = 1.0e4
    weights = [numpy_helper.from_array(spiky, "w_spiky")] + [
        numpy_helper.from_array((rng.normal(size=shape) * 0.3).astype(np.float32), name)
        for name, shape in (("w_side", (8, 32)), ("w_hidden", (32, 256)), ("w_head", (256, 4)))]
    node = helper.make_node
    nodes = [node("MatMul", ["a", "w_spiky"], ["s"], name="spiky/MatMul"),
             node("Relu", ["s"], ["sr"], name="spiky/Relu"),
             node("MatMul", ["b", "w_side"], ["t"], name="side/MatMul"),
             node("Add", ["sr", "t"], ["u"], name="mix/Add"),
             node("MatMul", ["u", "w_hidden"], ["h"], name="hidden/MatMul"),
             node("Relu", ["h"], ["hr"], name="hidden/Relu"),
             node("MatMul", ["hr", "w_head"], ["logits"], name="head/MatMul"),
             node("Softmax", ["logits"], ["probs"], name="head/Softmax", axis=-1)]
    graph = helper.make_graph(
        nodes, "twospiky", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 8]) for n in ("a", "b")],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 4])], weights)
    return _save_graph(graph, path)


def test_a_two_input_qdq_model_is_debugged_by_node_and_repaired(tmp_path: Path) -> None:
    model = _two_input_spiky(tmp_path / "twospiky.onnx")
    rng = np.random.default_rng(6)
    a = rng.normal(size=(64, 8)).astype(np.float32)
    a[:, 0] = 0.0
    np.savez(tmp_path / "feed.npz", a=a, b=rng.normal(size=(64, 8)).astype(np.float32))
    spec = Spec.model_validate({"name": "twospiky", "model": {"path": str(model)},
                                "compress": {"variants": ["onnx-float32", "onnx-qdq"]},
                                "gate": {"max_metric_drop": 10.0}}, strict=False)
    card = compress_file(model, Workspace(tmp_path / "ws"), calibration_data=tmp_path / "feed.npz", spec=spec)
    rows = {row["variant"]: row for row in card["variants"]}
    qdq, mixed = rows["onnx-qdq"], rows["onnx-qdq-mixed"]
    assert qdq["status"] == "rejected" and qdq["metric_drop"] > 10.0
    layers = qdq["layers"]["layers"]
    assert max(layers, key=lambda entry: entry["error"])["layer"] == "spiky"
    assert {entry["layer"] for entry in layers} <= {"spiky", "side", "mix", "hidden", "head"}
    assert mixed["kept_float"] == ["spiky"] and mixed["metric_drop"] <= 10.0
    assert mixed["size_bytes"] < rows["onnx-original"]["size_bytes"]  # the other layers stayed int8
    assert any(note.startswith("repairs onnx-qdq (drop ") for note in mixed["notes"]), mixed["notes"]
    assert mixed["latency_p50_ms"] and mixed["lambda"]["x86_64"]["cost_per_million"] > 0  # timed and priced too
    if mixed["status"] == "rejected":  # within the budget: only time or cost can keep it from shipping
        assert mixed["reason"].startswith("slower than onnx-original"), mixed["reason"]
