"""edgemaas bench: the machinery on the linear model with tiny counts. No test asserts a timing: the numbers are
measured for real, and the tests check that every server was measured, that ratios and goals come from those
numbers, and that the files and the README table are written from them."""

from __future__ import annotations

import copy
import json
import statistics
import zipfile
from pathlib import Path

import pytest

from edgemaas.bench import BenchResult, evaluate_goals, load_results, readme_table, run_bench, write_results
from edgemaas.bench import report as bench_report
from edgemaas.bench.goals import INT8_PAIRS
from edgemaas.bench.servers import VARIANT_SERVERS
from edgemaas.errors import UserError
from edgemaas.workspace import Workspace

pytestmark = pytest.mark.models("linear")  # the built-ins `trained` holds here

COLD_RUNS, WARM_REQUESTS = 2, 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench(trained: Workspace) -> tuple[BenchResult, list[str]]:
    messages: list[str] = []
    result = run_bench(["linear"], trained, cold_runs=COLD_RUNS, warm_requests=WARM_REQUESTS,
                       report=messages.append)
    return result, messages


@pytest.fixture(scope="module")
def written(bench: tuple[BenchResult, list[str]], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_results(bench[0], tmp_path_factory.mktemp("bench"))


def test_every_server_in_the_workspace_is_measured(bench: tuple[BenchResult, list[str]], trained: Workspace) -> None:
    result, messages = bench
    for server_id, _, variant in VARIANT_SERVERS:
        server = result.server("linear", server_id)
        assert server is not None, server_id
        manifest = trained.variant_dir("linear", variant) / "manifest.json"
        if manifest.exists():
            assert server.measured, (server_id, server.note)
            assert len(server.cold_start_ms) == COLD_RUNS
            assert server.warm.n == WARM_REQUESTS and server.raw.n == WARM_REQUESTS
            assert server.model_bytes == json.loads(manifest.read_text())["model"]["size_bytes"]
        else:  # not built: skipped with a note, not an error
            assert server.status == "skipped" and variant in server.note
    measured = [s for s in result.servers if s.measured]
    assert {"tensorflow", "handler", "floor-litert", "floor-ort"} <= {s.server for s in measured}
    # Packages ship their bytecode, so the "what if it did" server (handler + .pyc) is not needed.
    with zipfile.ZipFile(trained.build / "_bench" / "linear" / "lambda" / "function.zip") as archive:
        assert any(n.endswith(".pyc") for n in archive.namelist())
    assert result.server("linear", "handler-bytecode") is None
    for server in measured:
        assert server.cold_start_median_ms == statistics.median(server.cold_start_ms)
        assert server.warm.p50_ms <= server.warm.p99_ms and server.peak_rss_mb > 0
    tensorflow = result.server("linear", "tensorflow")
    assert tensorflow.call is not None and tensorflow.call.n == WARM_REQUESTS  # model(x), beside model.predict
    handler = result.server("linear", "handler")
    assert handler.throughput_rps > 0
    assert handler.package_bytes == (trained.build / "_bench" / "linear" / "lambda" / "function.zip").stat().st_size
    assert any("run 2/2" in m for m in messages) and any("throughput" in m for m in messages)


def test_each_server_imports_only_what_it_needs(bench: tuple[BenchResult, list[str]]) -> None:
    result, _ = bench
    handler = result.server("linear", "handler")
    assert {"numpy", "ai_edge_litert", "edgemaas", "handler"} <= set(handler.third_party_modules)
    assert not {"tensorflow", "onnxruntime", "tf_keras"} & set(handler.third_party_modules)
    assert set(result.server(None, "floor-litert").third_party_modules) == {"numpy", "ai_edge_litert"}
    assert "onnxruntime" in result.server("linear", "ort-float32").third_party_modules
    assert "tensorflow" in result.server("linear", "tensorflow").third_party_modules


def test_goals_are_ratios_of_the_measured_numbers(bench: tuple[BenchResult, list[str]]) -> None:
    result, _ = bench
    goals = {g.goal: g for g in result.goals}
    handler, tensorflow = result.server("linear", "handler"), result.server("linear", "tensorflow")
    floor = result.server(None, "floor-litert")
    expected = {
        "cold_vs_tensorflow": handler.cold_start_median_ms / tensorflow.cold_start_median_ms,
        "cold_vs_floor": handler.cold_start_median_ms / floor.cold_start_median_ms,
        "warm_vs_keras": handler.warm.p50_ms / tensorflow.warm.p50_ms,
        "handler_vs_raw": handler.warm.p50_ms / handler.raw.p50_ms,
    }
    for int8, float32 in INT8_PAIRS.items():
        quantized, reference = result.server("linear", int8), result.server("linear", float32)
        if quantized.measured and reference.measured:
            expected[f"{int8}_vs_float32"] = quantized.warm.p50_ms / reference.warm.p50_ms
        else:
            assert goals[f"{int8}_vs_float32"].met is None and "not measured" in goals[f"{int8}_vs_float32"].detail
    for goal_id, ratio in expected.items():
        assert goals[goal_id].ratio == pytest.approx(ratio)
        assert goals[goal_id].met == (ratio <= goals[goal_id].target)


def test_goal_targets_including_the_cnn_int8_one(bench: tuple[BenchResult, list[str]]) -> None:
    """The same measured servers presented as the cnn: full int8 on LiteRT must then be at most 0.7x float32."""
    result = copy.deepcopy(bench[0])
    result.models = ["cnn"]
    for server in result.servers:
        server.model = "cnn" if server.model == "linear" else server.model
    int8, float32 = result.server("cnn", "litert-int8"), result.server("cnn", "litert-float32")
    for share, met in ((0.7, True), (0.71, False)):
        int8.warm.p50_ms = float32.warm.p50_ms * share
        goal = next(g for g in evaluate_goals(result) if g.goal == "litert-int8_vs_float32")
        assert goal.target == 0.7 and goal.met is met
    result.servers.remove(result.server("cnn", "tensorflow"))
    missing = [g for g in evaluate_goals(result) if g.goal in ("cold_vs_tensorflow", "warm_vs_keras")]
    assert len(missing) == 2 and all(g.ratio is None and g.met is None for g in missing)


def test_files_are_written(bench: tuple[BenchResult, list[str]], written: list[Path]) -> None:
    result, _ = bench
    names = {p.name for p in written}
    assert names == {"bench.json", "bench.md", "cold_start.png", "warm_latency.png", "memory.png"}
    out = written[0].parent
    assert load_results(out).to_dict() == json.loads(json.dumps(result.to_dict()))
    markdown = (out / "bench.md").read_text()
    for server in result.servers:
        assert server.label in markdown
    for png in (p for p in written if p.suffix == ".png"):
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
        import matplotlib.image

        assert matplotlib.image.imread(str(png)).shape[0] > 100
    assert not list(out.glob(".*.tmp"))


def test_a_failed_write_leaves_the_previous_results(bench: tuple[BenchResult, list[str]], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    result, _ = bench
    write_results(result, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    changed = copy.deepcopy(result)
    changed.date = "2000-01-01T00:00:00+00:00"

    def broken(*_: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(bench_report, "plot_memory", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_results(changed, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_readme_table(bench: tuple[BenchResult, list[str]], written: list[Path]) -> None:
    result, _ = bench
    text = readme_table(result)
    assert result.date[:10] in text and result.machine["cpu"] in text and f"{result.machine['cores']} cores" in text
    for dist in ("numpy", "ai-edge-litert", "onnxruntime", "tensorflow"):
        assert f"{dist} {result.versions[dist]}" in text
    assert f"Python {result.machine['python']}" in text
    server_rows = [line for line in text.splitlines() if line.startswith(("| linear | ", "| (all) | "))]
    for server in result.servers:
        assert any(f"| {server.label} |" in row for row in server_rows), server.label
    lines = text.splitlines()
    matrix = next(i for i, line in enumerate(lines) if line.startswith("| model | cold: "))
    goal_row = lines[matrix + 2]  # after the heading and the alignment row: the only model's row
    assert goal_row.startswith("| linear | ")
    for goal in result.goals:  # one cell per goal: the ratio and met / missed, or n/a
        cell = "n/a" if goal.ratio is None else \
            f"{bench_report.ratio_text(goal.ratio, goal.target)} {bench_report.goal_text(goal)}"
        assert f"| {cell} |" in goal_row, goal.goal
    details = (written[0].parent / "bench.md").read_text()
    for goal in result.goals:
        assert goal.description in details and goal.detail.replace("|", "\\|") in details


def test_bad_requests(trained: Workspace) -> None:
    with pytest.raises(UserError, match="edgemaas build no-such-model"):
        run_bench(["no-such-model"], trained)
    with pytest.raises(UserError, match="at least 1"):
        run_bench(["linear"], trained, cold_runs=0)


def test_only_the_servers_asked_for(trained: Workspace) -> None:
    result = run_bench(["linear"], trained, cold_runs=1, warm_requests=1, only={"handler", "floor-litert"})
    assert {(s.model, s.server) for s in result.servers} == {(None, "floor-litert"), ("linear", "handler")}
    assert all(s.measured and len(s.cold_start_ms) == 1 for s in result.servers)
    goals = {g.goal: g for g in result.goals}
    assert goals["cold_vs_floor"].ratio is not None and goals["cold_vs_tensorflow"].ratio is None
