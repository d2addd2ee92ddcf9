"""Report card sections for cost and per-layer error, and the mapping of converted tensors to Keras layer names."""

from __future__ import annotations

from edgemaas.compress.debugger import keras_layer_for
from edgemaas.compress.passes import KERAS_ROOT
from edgemaas.compress.records import ReportCard, VariantResult
from edgemaas.compress.report import render_markdown
from edgemaas.compress.report_extra import layers_text
from edgemaas.compress.run import gate_variants
from edgemaas.spec import GateSection

LAYERS = {"method": "LiteRT QuantizationDebugger (NumericVerify per op)", "metric": "RMSE / scale",
          "layers": [{"layer": "conv2d", "op": "CONV_2D", "error": 0.25, "tensors": ["m/conv2d/Relu"]},
                     {"layer": "spiky", "op": "FULLY_CONNECTED", "error": 41.0, "tensors": ["m/spiky/MatMul"]},
                     {"layer": "head", "op": "FULLY_CONNECTED", "error": 0.31, "tensors": ["m/head/MatMul"]}]}


def test_tensor_names_map_to_the_keras_layer_that_made_them() -> None:
    names = ["input_1", "conv2d", "conv2d_1", "dense"]
    assert keras_layer_for("model/conv2d_1/Relu;model/conv2d_1/BiasAdd;model/conv2d_1/Conv2D", names) == "conv2d_1"
    assert keras_layer_for("sequential/dense/MatMul", names) == "dense"
    assert keras_layer_for("StatefulPartitionedCall:0", names) == "StatefulPartitionedCall:0"


def card() -> ReportCard:
    rows = [VariantResult("tflite-float32", "tflite", KERAS_ROOT, metric_drop=0.0, size_bytes=400, gzip_bytes=380,
                          latency_p50_ms=0.5, extra={"latency": {"p50_ms": 0.5, "ci95_ms": [0.49, 0.51],
                                                                 "samples": 200, "peak_rss_mb": 60.0}}),
            VariantResult("tflite-int8", "tflite", KERAS_ROOT, metric_drop=30.0, size_bytes=100, gzip_bytes=90,
                          latency_p50_ms=0.4, extra={"layers": LAYERS}),
            VariantResult("tflite-int8-mixed", "tflite", KERAS_ROOT, metric_drop=0.2, size_bytes=130, gzip_bytes=120,
                          latency_p50_ms=0.45, extra={"kept_float": ["spiky"]})]
    selection = gate_variants(rows, GateSection(), "classification", True, KERAS_ROOT)
    return ReportCard.from_dict({"model": "m", "task": "classification", "metric": "accuracy",
                                 "higher_is_better": True, "metric_source": "labels", "eval_data": "x",
                                 "drop_unit": "accuracy points", "reference": {"variant": KERAS_ROOT},
                                 "gate": selection.to_dict(), "variants": [r.to_dict() for r in rows],
                                 "machine": {"model": "AMD EPYC", "arch": "x86_64", "int8": ["avx512_vnni"],
                                             "cores": 2}})


def test_layers_text_lists_worst_first_and_what_stayed_float() -> None:
    text = layers_text(card())
    lines = text.splitlines()
    assert lines[0].startswith("tflite-int8 (rejected): RMSE / scale")
    assert lines[1].split()[0] == "spiky" and lines[2].split()[0] == "head" and lines[3].split()[0] == "conv2d"
    assert lines[-1] == "tflite-int8-mixed (chosen): kept in float: spiky"
    empty = ReportCard.from_dict({"model": "m", "variants": []})
    assert "no per-layer quantization data" in layers_text(empty)


def test_markdown_shows_cost_the_cost_model_the_cpu_and_the_worst_layers() -> None:
    md = render_markdown(card())
    assert "## Lambda cost per 1M requests" in md and "**Cost model.**" in md
    assert "- tflite on x86_64: `tflite-int8-mixed` $" in md and "vs `tflite-float32` $" in md
    assert "AMD EPYC (x86_64; AVX-512 VNNI)" in md and "not on arm64" in md
    assert "| spiky | FULLY_CONNECTED | 41 |" in md
    assert "`tflite-int8-mixed` kept in float: spiky" in md
