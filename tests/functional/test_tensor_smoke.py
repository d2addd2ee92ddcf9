"""The package-time smoke test of a model brought by a user: concrete shapes, every output, clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemaas.errors import UserError
from edgemaas.runtime import read_manifest
from edgemaas.user_models.importing import import_model
from edgemaas.user_models.smoke import load_example, parse_input_shapes, run_smoke, smoke_request
from edgemaas.workspace import Workspace
from tests.tensor_models import ONNX_OPSET, detector_onnx, vad_onnx


def frames_onnx(path: Path, frame: int = 4) -> Path:
    """[batch, samples] -> frames of `frame`: a length that is not a multiple of it (1, say) cannot run."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    audio = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])
    energy = helper.make_tensor_value_info("energy", TensorProto.FLOAT, [None])
    shape = numpy_helper.from_array(np.array([-1, frame], np.int64), "frame_shape")
    nodes = [helper.make_node("Reshape", ["audio", "frame_shape"], ["frames"]),
             helper.make_node("ReduceSumSquare", ["frames"], ["energy"], axes=[1], keepdims=0)]
    graph = helper.make_graph(nodes, "frames", [audio], [energy], [shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]), str(path))
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("smoke")
    ws = Workspace(root / "ws")
    made = {}
    for make in (vad_onnx, detector_onnx, frames_onnx):
        path = make(root / f"{make.__name__.removesuffix('_onnx')}.onnx")
        made[path.stem] = ws.variant_dir(import_model(path, ws).name, "imported")
    return made


def test_without_shapes_dynamic_dimensions_are_one_and_it_says_so(imported: dict[str, Path]) -> None:
    manifest = read_manifest(imported["vad"])
    request, notes = smoke_request(manifest)
    result = run_smoke(imported["vad"], request, notes)
    assert result.outputs == [("output", [1, 1], "float32"), ("stateN", [2, 1, 16], "float32")]
    assert result.inputs == [("input", [1, 1], "float32"), ("state", [2, 1, 16], "float32"), ("sr", [], "int64")]
    assert notes == [
        "input input (batch, samples): dynamic dimensions set to 1 for the smoke test, shape [1, 1]; give "
        "--input-shape input=... for real sizes",
        "input state (2, batch, 16): dynamic dimensions set to 1 for the smoke test, shape [2, 1, 16]; give "
        "--input-shape state=... for real sizes"]
    assert result.lines()[-1] == "smoke test: 2 output(s): output [1, 1] float32, stateN [2, 1, 16] float32"


def test_input_shapes_and_example_inputs_give_the_concrete_shapes(imported: dict[str, Path], tmp_path: Path) -> None:
    manifest = read_manifest(imported["detector"])
    request, notes = smoke_request(manifest, parse_input_shapes(["images=2,3,160,256"]))
    result = run_smoke(imported["detector"], request, notes)
    assert notes == [] and result.outputs == [("out_1", [2, 2], "float32"), ("out_0", [2, 4], "float32")]
    example = tmp_path / "example.npz"
    np.savez(example, images=np.zeros((1, 3, 48, 320), np.float32))
    request, notes = smoke_request(manifest, example=load_example(example, manifest))
    assert run_smoke(imported["detector"], request, notes).inputs == [("images", [1, 3, 48, 320], "float32")]


def test_a_model_that_cannot_run_at_one_asks_for_shapes(imported: dict[str, Path]) -> None:
    manifest = read_manifest(imported["frames"])
    request, notes = smoke_request(manifest)
    with pytest.raises(UserError, match=r"the package-time smoke test failed: inputs: the model cannot run on these "
                                        r"shapes \(audio \[1, 1\]\).*give concrete shapes with --input-shape"):
        run_smoke(imported["frames"], request, notes)
    request, notes = smoke_request(manifest, parse_input_shapes(["audio=3,64"]))
    assert run_smoke(imported["frames"], request, notes).outputs == [("energy", [48], "float32")]


@pytest.mark.parametrize("values, message", [
    (["images=1,3,160"], "--input-shape images: shape [1, 3, 160] has rank 3; the input is [batch, 3, height, width]"),
    (["images=1,4,160,256"], "dimension 1 is 4; the model fixes it at 3"),
    (["images=1,3,0,256"], "dimension 2 is 0; every dimension must be at least 1"),
    (["photo=1,3,2,2"], "--input-shape: photo is not an input of this model; its inputs are images"),
    (["images"], "expected NAME=D1,D2,..."),
    (["images=1,3,2,2", "images=1,3,4,4"], "'images' is given twice"),
])
def test_bad_shapes_are_refused_with_the_reason(imported: dict[str, Path], values: list[str], message: str) -> None:
    with pytest.raises(UserError) as caught:
        smoke_request(read_manifest(imported["detector"]), parse_input_shapes(values))
    assert message in str(caught.value)


def test_package_command_smoke_tests_every_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from edgemaas.cli import cli

    monkeypatch.chdir(tmp_path)
    frames = frames_onnx(tmp_path / "frames.onnx")
    runner = CliRunner()
    # frames of 3: neither 1 nor any size of the ladder (16, 64, 256, 512) is a multiple of 3
    thirds = frames_onnx(tmp_path / "thirds.onnx", frame=3)
    refused = runner.invoke(cli, ["package", str(thirds), "--target", "edge"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "Error: the package-time smoke test failed: inputs: the model cannot run on these shapes (audio [1, 1])" \
        in " ".join(refused.output.split())
    assert not list((tmp_path / "dist").glob("thirds/edge/*.tar.gz"))  # nothing shipped untested
    # frames of 4: 1 cannot run, 16 can; the output says which sizes were used
    laddered = runner.invoke(cli, ["package", str(frames), "--target", "edge"])
    assert laddered.exit_code == 0, laddered.output
    assert ("input audio (batch, samples): dynamic dimensions set to 1 (the first) and 16 (1 could not run) for the "
            "smoke test, shape [1, 16]") in " ".join(laddered.output.split())
    assert "smoke test: 1 output(s): energy [4] float32" in laddered.output
    done = runner.invoke(cli, ["package", str(frames), "--target", "edge", "--input-shape", "audio=2,400"])
    assert done.exit_code == 0, done.output
    assert "smoke test: 1 output(s): energy [200] float32" in done.output
    example = tmp_path / "example.npz"
    np.savez(example, audio=np.ones((1, 8), np.float32))
    done = runner.invoke(cli, ["package", str(frames), "--target", "edge", "--example-input", str(example)])
    assert done.exit_code == 0 and "energy [2] float32" in done.output, done.output
    wrong = runner.invoke(cli, ["package", str(frames), "--target", "edge", "--input-shape", "audio=2,4,4"])
    assert wrong.exit_code == 1
    assert "Error: --input-shape audio: shape [2, 4, 4] has rank 3; the input is [batch, samples]" in wrong.output


def test_small_example_values_are_kept_for_examples_and_load_checks(imported: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    """A model may branch on a value (Silero VAD on its sample rate): the example's small inputs are kept, so
    describe's examples and the shipped-runtime load check (ServingModel.example_request) send them, not zeros."""
    from edgemaas.runtime import load_model
    from edgemaas.user_models.smoke import smoke_imported

    example = tmp_path / "vad.npz"
    np.savez(example, input=np.full((1, 96), 0.25, np.float32), state=np.zeros((2, 1, 16), np.float32),
             sr=np.array(8000, np.int64))
    lines = smoke_imported(imported["vad"], example_input=example)
    assert lines == ["smoke test: 2 output(s): output [1, 1] float32, stateN [2, 1, 16] float32"]
    manifest = read_manifest(imported["vad"])
    assert manifest.example_shapes == {"input": [1, 96], "state": [2, 1, 16], "sr": []}
    assert manifest.example_values == {"state": np.zeros((2, 1, 16)).tolist(), "sr": 8000}  # input: 96 values
    path, body = load_model(imported["vad"]).example_request()
    assert path == "/predict" and body["inputs"]["sr"] == 8000 and body["inputs"]["input"] == [[0.0] * 96]
    oip = load_model(imported["vad"]).examples()["POST /v2/models/vad/infer"]["inputs"]
    assert oip[2] == {"name": "sr", "shape": [], "datatype": "INT64", "data": [8000]}
