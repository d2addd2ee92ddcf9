"""The compression report card: files written atomically, every variant and reason shown, plots that are PNGs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from edgemaas.compress import report as rep
from edgemaas.compress.report import (ReportNotFoundError, format_drop, format_latency, format_metric_value, format_ratio,
                             format_size, gate_threshold, load_report, render_markdown, report_table, write_report)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INT16_ERROR = ("ConverterError: <unknown>:0: error: 'tfl.fully_connected' op quantization parameters violate the "
               "int16x8 kernel's requirements | see the converter log")
QDQ_REASON = "metric drop 1.39 accuracy points exceeds the budget of 1.0 accuracy points"


def _row(variant: str, fmt: str, status: str, metric: float | None, size: int | None, *, reason: str = "",
         latency: float | None = None, runtime: str | None = None, sparsity: float | None = 0.0,
         parity: float | None = None, notes: list[str] | None = None, ref_metric: float = 0.9916,
         base_size: int = 59000, gzip_factor: float = 0.8) -> dict[str, Any]:
    measured = metric is not None
    gzip = int(size * gzip_factor) if size else None
    return {
        "variant": variant, "format": fmt, "parent": "keras-float32", "status": status, "reason": reason,
        "metric_value": metric, "metric_drop": round((ref_metric - metric) * 100, 4) if measured else None,
        "size_bytes": size, "gzip_bytes": gzip,
        "size_ratio": round(size / base_size, 4) if size else None,
        "gzip_ratio": round(gzip / (base_size * 0.8), 4) if gzip else None,
        "sparsity": sparsity if measured else None, "parity_max_abs": parity if measured else None,
        "latency_p50_ms": latency, "runtime": runtime, "notes": notes or [],
    }


@pytest.fixture()
def cnn_report() -> dict[str, Any]:
    """A classifier with labels: TFLite and ONNX variants, every status, and ONNX chosen normally."""
    lite, ort = "ai-edge-litert", "onnxruntime"
    variants = [
        _row("tflite-float32", "tflite", "passed", 0.9916, 59000, latency=0.0213, runtime=lite, parity=0.0),
        _row("tflite-float16", "tflite", "passed", 0.9916, 30200, latency=0.0221, runtime=lite, parity=2.1e-4),
        _row("tflite-dynamic", "tflite", "passed", 0.9889, 23100, latency=0.0188, runtime=lite, parity=0.0021),
        _row("tflite-int8", "tflite", "chosen", 0.9916, 21864, latency=0.0105, runtime=lite, parity=0.0039),
        _row("tflite-int16x8", "tflite", "failed", None, None, reason=INT16_ERROR, sparsity=None),
        _row("tflite-pruned50-int8", "tflite", "passed", 0.9889, 21900, latency=0.0107, runtime=lite,
             sparsity=0.5, parity=0.0051, gzip_factor=0.62, notes=["gzip shrinks pruned weights; the file does not"]),
        _row("tflite-pruned80-int8", "tflite", "rejected", 0.9721, 21900, latency=0.0106, runtime=lite, sparsity=0.8,
             gzip_factor=0.45,
             parity=0.031, reason="metric drop 1.95 accuracy points exceeds the budget of 1.0 accuracy points"),
        _row("onnx-float32", "onnx", "passed", 0.9916, 61500, latency=0.0352, runtime=ort, parity=1e-6),
        _row("onnx-dynamic", "onnx", "chosen", 0.9889, 18800, latency=0.0301, runtime=ort, parity=0.0024),
        _row("onnx-qdq", "onnx", "rejected", 0.9777, 19300, latency=0.0412, runtime=ort, parity=0.044,
             reason=QDQ_REASON),
        _row("onnx-float16", "onnx", "skipped", None, None, sparsity=None,
             notes=["onnxconverter-common is not installed; `pip install onnxconverter-common` to add float16"]),
    ]
    return {
        "model": "cnn", "task": "classification", "metric": "accuracy", "higher_is_better": True,
        "metric_source": "labels", "eval_data": "held-out split of scikit-learn digits (359 samples)",
        "drop_unit": "accuracy points",
        "reference": {"variant": "keras-float32", "metric_value": 0.9916, "size_bytes": 180000, "gzip_bytes": 160000},
        "gate": {"max_metric_drop": 1.0, "objective": "smallest",
                 "chosen": {"tflite": "tflite-int8", "onnx": "onnx-dynamic"}, "default": "tflite-int8",
                 "fallback": []},
        "variants": variants, "created": "2026-11-28T17:00:00Z", "edgemaas_version": "0.1.0",
    }


@pytest.fixture()
def fallback_report(cnn_report: dict[str, Any]) -> dict[str, Any]:
    """The same classifier where no ONNX variant passes: the float ONNX model ships."""
    report = copy.deepcopy(cnn_report)
    for row in report["variants"]:
        if row["variant"] == "onnx-dynamic":
            row.update(status="rejected", metric_value=0.9805, metric_drop=1.11,
                       reason="metric drop 1.11 accuracy points exceeds the budget of 1.0 accuracy points")
        elif row["variant"] == "onnx-float32":
            row["status"] = "chosen"
    report["gate"]["chosen"]["onnx"] = None
    report["gate"]["fallback"] = ["onnx"]
    return report


@pytest.fixture()
def parity_report() -> dict[str, Any]:
    """A model brought without eval data: output RMSE against the original, lower is better, ONNX falls back."""
    ref = 0.0
    lite, ort = "ai-edge-litert", "onnxruntime"

    def row(variant: str, fmt: str, status: str, rmse: float | None, size: int | None, **kw: Any) -> dict[str, Any]:
        r = _row(variant, fmt, status, rmse, size, ref_metric=ref, base_size=2_400_000, **kw)
        if rmse is not None:
            r["metric_drop"] = round(rmse / 0.05 * 100, 3)  # % of the original output's RMS
        return r

    variants = [
        row("tflite-float32", "tflite", "passed", 0.0, 2_400_000, latency=1.92, runtime=lite, parity=0.0),
        row("tflite-float16", "tflite", "passed", 0.00011, 1_200_400, latency=2.05, runtime=lite, parity=4e-4),
        row("tflite-int8", "tflite", "chosen", 0.00042, 610_000, latency=0.71, runtime=lite, parity=0.0021),
        row("tflite-int16x8", "tflite", "rejected", 0.0009, 640_000, latency=9.8, runtime=lite, parity=0.004,
            reason="metric drop 1.80 % of RMSE exceeds the budget of 1.0 % of RMSE"),
        row("onnx-float32", "onnx", "passed", 0.0, 2_410_000, latency=1.55, runtime=ort, parity=0.0),
        row("onnx-qdq", "onnx", "rejected", 0.0012, 640_500, latency=0.93, runtime=ort, parity=0.006,
            reason="metric drop 2.40 % of RMSE exceeds the budget of 1.0 % of RMSE"),
        row("onnx-dynamic", "onnx", "failed", None, None, sparsity=None,
            reason="onnxruntime.quantization: MatMulInteger is not implemented for this input type\n"
                   "Traceback (most recent call last):\n  File \"quantize.py\", line 12\n"
                   "NotImplemented: MatMulInteger"),
    ]
    return {
        "model": "mybrought", "task": "raw", "metric": "output_rmse", "higher_is_better": False,
        "metric_source": "parity", "eval_data": "64 random inputs in the model's input range",
        "drop_unit": "% of RMSE",
        "reference": {"variant": "original.tflite", "metric_value": ref, "size_bytes": 2_400_000,
                      "gzip_bytes": 2_200_000},
        "gate": {"max_metric_drop": 1.0, "objective": "fastest",
                 "chosen": {"tflite": "tflite-int8", "onnx": None}, "default": "tflite-int8", "fallback": ["onnx"]},
        "variants": variants, "created": "2026-11-28T17:05:00Z", "edgemaas_version": "0.1.0",
    }


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_writes_four_non_empty_files(tmp_path: Path, cnn_report: dict[str, Any]) -> None:
    out = tmp_path / "reports" / "cnn"  # created, parents too
    paths = write_report(cnn_report, out)
    assert set(paths) == {"json", "markdown", "size_vs_metric", "latency"}
    assert _files(out) == {"report.json", "report.md", "size_vs_metric.png", "latency.png"}  # no temp files left
    for path in paths.values():
        assert path.parent == out and path.stat().st_size > 0
    plain = tmp_path / "plain"
    plain.write_text("x")
    for path in paths.values():  # readable like any file written here, not private temp-file permissions
        assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_json_round_trips(tmp_path: Path, cnn_report: dict[str, Any]) -> None:
    paths = write_report(cnn_report, tmp_path)
    assert load_report(tmp_path) == cnn_report
    assert paths["json"].read_text().startswith('{\n  "model": "cnn"')  # indent 2


def test_numpy_scalars_are_written_as_numbers(tmp_path: Path, cnn_report: dict[str, Any]) -> None:
    import numpy as np

    cnn_report["variants"][0]["latency_p50_ms"] = np.float32(0.5)
    cnn_report["variants"][0]["size_bytes"] = np.int64(59000)
    write_report(cnn_report, tmp_path)
    row = load_report(tmp_path)["variants"][0]
    assert row["latency_p50_ms"] == 0.5 and row["size_bytes"] == 59000


def test_markdown_shows_every_variant_reason_and_the_gate(tmp_path: Path, cnn_report: dict[str, Any]) -> None:
    md = write_report(cnn_report, tmp_path)["markdown"].read_text()
    assert md.startswith("# Compression report: cnn\n")
    for row in cnn_report["variants"]:
        assert f"| {row['variant']} |" in md or f"| **{row['variant']}** |" in md
    not_shipped = md.split("## Not shipped")[1]
    assert INT16_ERROR in not_shipped and QDQ_REASON in not_shipped
    assert "metric drop 1.95 accuracy points" in not_shipped
    assert "onnxconverter-common is not installed" in not_shipped  # skipped: its note stands in for a reason
    assert "gzip shrinks pruned weights" in md  # notes of rows that shipped or passed
    assert ("**Gate:** ship the smallest variant of each format whose accuracy is at most 1.0 accuracy points worse "
            "than the reference's (threshold 98.16%).") in md
    assert "- tflite: **tflite-int8** (the default for `edgemaas package`)" in md
    assert "- onnx: **onnx-dynamic**" in md
    assert "held-out split of scikit-learn digits (359 samples)" in md
    assert "No variant passed" not in md and "No labelled eval data" not in md
    assert "![gzipped size vs accuracy](size_vs_metric.png)" in md and "![p50 latency](latency.png)" in md


def test_markdown_table_is_sorted_by_format_then_size(cnn_report: dict[str, Any]) -> None:
    md = render_markdown(cnn_report)
    rows = [line.split("|")[1].strip().strip("*") for line in md.splitlines()
            if line.startswith("| ") and not line.startswith("| variant")]
    assert rows == ["onnx-dynamic", "onnx-qdq", "onnx-float32", "onnx-float16",
                    "tflite-int8", "tflite-pruned50-int8", "tflite-pruned80-int8", "tflite-dynamic",
                    "tflite-float16", "tflite-float32", "tflite-int16x8"]
    int8 = next(line for line in md.splitlines() if line.startswith("| **tflite-int8**"))
    assert ("| **chosen** | 99.16% | +0.00 accuracy points | 21.4 KB | 17.1 KB | 0.37x | 0% | 0.0039 | 0.011 ms "
            "| ai-edge-litert |") in int8
    failed = next(line for line in md.splitlines() if line.startswith("| tflite-int16x8"))
    assert failed.count("| - ") == 9  # every measurement missing, runtime too
    # The converter message holds a `|`; it must not split a table row.
    assert all(line.count("|") == 13 for line in md.splitlines() if line.startswith("| "))


def test_fallback_is_loud(tmp_path: Path, fallback_report: dict[str, Any]) -> None:
    md = write_report(fallback_report, tmp_path)["markdown"].read_text()
    assert "**No variant passed the gate for onnx: the float model ships.**" in md
    assert "- onnx: none passed; the float model ships" in md
    assert "metric drop 1.11 accuracy points exceeds the budget" in md


def test_parity_warning_and_rmse_threshold(tmp_path: Path, parity_report: dict[str, Any]) -> None:
    paths = write_report(parity_report, tmp_path)
    md = paths["markdown"].read_text()
    assert "No labelled eval data was given, so the metric is agreement with the original model" in md
    assert md.index("No labelled eval data") < md.index("## Variants")  # up top, not buried
    assert "**No variant passed the gate for onnx: the float model ships.**" in md
    assert "ship the fastest variant" in md
    for row in parity_report["variants"]:
        assert row["variant"] in md
    assert "MatMulInteger is not implemented for this input type" in md
    assert "```text" in md  # a multi-line traceback is kept verbatim in a code block
    assert "| 0.00042 |" in md  # output_rmse with 4 significant digits
    for path in (paths["size_vs_metric"], paths["latency"]):
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_plots_are_pngs(tmp_path: Path, cnn_report: dict[str, Any]) -> None:
    paths = write_report(cnn_report, tmp_path)
    for key in ("size_vs_metric", "latency"):
        data = paths[key].read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 20_000, f"{key} is suspiciously small: {len(data)} bytes"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 400 and height > 200


def test_plots_survive_nothing_measured(tmp_path: Path, cnn_report: dict[str, Any]) -> None:
    for row in cnn_report["variants"]:
        row.update(status="failed", metric_value=None, metric_drop=None, size_bytes=None, gzip_bytes=None,
                   latency_p50_ms=None, reason="converter crashed")
    cnn_report["reference"]["metric_value"] = None
    paths = write_report(cnn_report, tmp_path)
    assert paths["latency"].read_bytes()[:8] == PNG_MAGIC
    assert "(threshold" not in paths["markdown"].read_text()


def test_gate_threshold() -> None:
    base = {"reference": {"metric_value": 0.9916}, "gate": {"max_metric_drop": 1.0}}
    assert gate_threshold({**base, "higher_is_better": True, "drop_unit": "accuracy points"}) == pytest.approx(0.9816)
    assert gate_threshold({**base, "reference": {"metric_value": 0.5}, "higher_is_better": False,
                           "drop_unit": "% of RMSE"}) == pytest.approx(0.505)
    assert gate_threshold({**base, "reference": {"metric_value": None}}) is None


def test_gate_threshold_for_output_rmse_reads_the_scale_off_the_rows(parity_report: dict[str, Any]) -> None:
    # Output RMSE against the original is 0 for the original: a budget relative to it would allow nothing. The rows'
    # drops are % of the output scale (0.05 here), so 1% of budget is an output RMSE of 0.0005.
    assert gate_threshold(parity_report) == pytest.approx(0.0005)
    assert "(threshold 0.0005)" in render_markdown(parity_report)
    for row in parity_report["variants"]:
        row["metric_drop"] = None
    assert gate_threshold(parity_report) is None


def test_formatting_helpers() -> None:
    assert format_metric_value("accuracy", 0.99164) == "99.16%"
    assert format_metric_value("agreement", 1.0) == "100.00%"
    assert format_metric_value("rmse", 12.34567) == "12.35"
    assert format_metric_value("output_rmse", 0.000123456) == "0.0001235"
    assert format_metric_value("rmse", None) == "-"
    assert format_size(21864) == "21.4 KB" and format_size(None) == "-"
    assert format_ratio(0.2734) == "0.27x"
    assert format_latency(0.0105) == "0.011 ms"
    assert format_drop(0.28, "accuracy points") == "+0.28 accuracy points"
    assert format_drop(-0.1, "% of RMSE") == "-0.10 % of RMSE"


def test_rich_table_renders_every_variant(cnn_report: dict[str, Any], fallback_report: dict[str, Any]) -> None:
    console = Console(record=True, width=200)
    console.print(report_table(cnn_report))
    text = console.export_text()
    for row in cnn_report["variants"]:
        assert row["variant"] in text
    assert ("cnn: gate: drop ≤ 1.0 accuracy points, smallest wins; ships tflite: tflite-int8, onnx: onnx-dynamic"
            in text)
    assert "0.011 ms" in text and "99.16%" in text

    console = Console(record=True, width=200)
    console.print(report_table(fallback_report))
    assert "no variant passed the gate for onnx" in console.export_text()


def test_rich_table_colours_statuses(cnn_report: dict[str, Any]) -> None:
    table = report_table(cnn_report)
    statuses = {cell.plain: str(cell.style) for cell in table.columns[2]._cells}
    assert statuses["chosen"] == "bold green" and statuses["rejected"] == "yellow"
    assert statuses["failed"] == "red" and statuses["skipped"] == "dim"


def test_rich_table_parity_caption(parity_report: dict[str, Any]) -> None:
    console = Console(record=True, width=200)
    console.print(report_table(parity_report))
    assert "no labelled eval data" in console.export_text()


def test_load_report_missing(tmp_path: Path) -> None:
    with pytest.raises(ReportNotFoundError) as info:
        load_report(tmp_path)
    assert str(info.value) == f"no report in {tmp_path}; run `edgemaas compress NAME` first"
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError, match="no report in"):
        load_report(tmp_path / "does-not-exist")


def test_load_report_corrupt(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text('{"model": "cnn", "vari')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_report(tmp_path)


def test_interrupted_write_leaves_no_files(tmp_path: Path, cnn_report: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    def half_written(self: Any, fname: Any, *args: Any, **kwargs: Any) -> None:
        Path(fname).write_bytes(PNG_MAGIC + b"half")  # what a crash mid-savefig leaves behind
        raise KeyboardInterrupt("interrupted while plotting")

    monkeypatch.setattr(Figure, "savefig", half_written)
    with pytest.raises(KeyboardInterrupt):
        write_report(cnn_report, tmp_path / "out")
    assert _files(tmp_path / "out") == set()  # no report.json, no PNG, no temp file


def test_interrupted_rewrite_keeps_the_previous_report(tmp_path: Path, cnn_report: dict[str, Any],
                                                       fallback_report: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    write_report(cnn_report, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(report: dict[str, Any], path: Path) -> None:
        path.write_bytes(b"\x89PNG partial")
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(rep, "plot_latency", boom)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report(fallback_report, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert load_report(tmp_path) == cnn_report


def test_not_json_able_fails_before_writing(tmp_path: Path, cnn_report: dict[str, Any]) -> None:
    cnn_report["variants"][0]["notes"] = [object()]
    with pytest.raises(TypeError):
        write_report(cnn_report, tmp_path / "out")
    assert not (tmp_path / "out" / "report.json").exists()
