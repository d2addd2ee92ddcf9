"""Phone packages (edgemaas/packaging/mobile.py): the real onnxruntime tools, LiteRT and onnxruntime on real models.

Uses the session's `trained` workspace (tflite-int8, tflite-float16 and onnx-float32 for the built-in models).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter
from onnxruntime.tools import onnx_model_utils
from onnxruntime.tools.mobile_helpers import usability_checker

from edgemaas.errors import UserError
from edgemaas.packaging.mobile.phones import RECORD_NAME, MobilePackage, package_mobile
from edgemaas.runtime import load_model, read_manifest
from edgemaas.runtime.manifest import sha256_file
from edgemaas.workspace import Workspace

SAMPLES = 40  # held-out samples per model for the .ort / .onnx comparison


def _variants(ws: Workspace, name: str) -> tuple[list[Path], Path]:
    return [ws.variant_dir(name, "tflite-int8"), ws.variant_dir(name, "tflite-float16")], \
        ws.variant_dir(name, "onnx-float32")


@pytest.fixture(scope="module")
def packages(trained: Workspace, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], MobilePackage]:
    """Every built-in model for Android; cnn (image) and nlp (text) for iOS too."""
    out = tmp_path_factory.mktemp("mobile")
    made = {}
    for name, platform in [(m, "android") for m in ("cnn", "nlp", "rnn", "linear")] + [("cnn", "ios"), ("nlp", "ios")]:
        tflite, onnx_dir = _variants(trained, name)
        made[name, platform] = package_mobile(platform, tflite, onnx_dir, out / name / platform)
    return made


def _file(package: MobilePackage, name: str) -> Path:
    return Path(package.out_dir) / name


def _ort_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")  # as the snippets set it
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ["cnn", "nlp", "rnn", "linear"])
def test_ort_loads_and_matches_the_onnx_on_held_out_samples(trained: Workspace, packages, name: str) -> None:
    package = packages[name, "android"]
    onnx_model = load_model(trained.variant_dir(name, "onnx-float32"))
    x_test = np.load(trained.data_file(name))["x_test"][:SAMPLES]
    (features,) = onnx_model.transform([x_test])  # the runtime's own preprocessing: tokens for nlp
    expected = onnx_model.backend.run([features])[0]

    session = _ort_session(_file(package, f"{name}.ort"))
    (ort_input,) = session.get_inputs()
    assert ort_input.shape[0] == 1  # the batch was fixed for NNAPI / Core ML
    got = np.concatenate([session.run(None, {ort_input.name: features[i:i + 1]})[0] for i in range(len(features))])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
    if onnx_model.manifest.task == "classification":
        assert (got.argmax(1) == expected.argmax(1)).all()


def test_package_files_and_record(packages) -> None:
    for (name, platform), package in packages.items():
        out = Path(package.out_dir)
        record = json.loads((out / RECORD_NAME).read_text())
        on_disk = sorted(p.name for p in out.iterdir() if p.name != RECORD_NAME)
        assert sorted(f["name"] for f in record["artifacts"]) == on_disk  # nothing staged or temporary left behind
        assert sorted(record["files"]) == sorted(str(out / f) for f in on_disk) == sorted(package.files)
        for f in record["artifacts"]:
            assert f["size_bytes"] == (out / f["name"]).stat().st_size
            assert f["sha256"] == sha256_file(out / f["name"])
        snippet = "Model.kt" if platform == "android" else "Model.swift"
        suffix = name.capitalize()
        assert {f"{name}_int8.tflite", f"{name}_float16.tflite", f"{name}.ort", f"{name}.required_operators.config",
                f"{name}_metadata.json", f"{name}_mobile_usability.txt", f"{name}_mobile_usability.json",
                f"{suffix}{snippet}", f"{suffix}Ort{snippet}"} == set(on_disk)
        assert record["snippet_model"] == f"{name}_int8.tflite"
        assert record["missing"] == [] and record["warnings"] == []


def test_operator_config_is_the_converters_for_the_shipped_ort(trained: Workspace, packages) -> None:
    package = packages["cnn", "android"]
    config = _file(package, "cnn.required_operators.config").read_text()
    assert "/tmp" not in config and "cnn.ort" in config  # the converter's temporary paths are gone
    entries = [line.split(";") for line in config.splitlines() if line and not line.startswith("#")]
    assert all(len(e) == 3 and e[0] in ("ai.onnx", "com.microsoft") and e[1].isdigit() for e in entries)
    ops = {op for _, _, names in entries for op in names.split(",")}
    source = onnx.load(str(trained.variant_dir("cnn", "onnx-float32") / "model.onnx"))
    assert {"Conv", "MaxPool", "Softmax"} <= ops & {node.op_type for node in source.graph.node}


@pytest.mark.parametrize("name", ["cnn", "nlp", "rnn", "linear"])
def test_metadata_matches_the_manifests(trained: Workspace, packages, name: str) -> None:
    package = packages[name, "android"]
    metadata = json.loads(_file(package, f"{name}_metadata.json").read_text())
    int8 = read_manifest(trained.variant_dir(name, "tflite-int8"))
    assert metadata["model"] == name and metadata["task"] == int8.task
    assert metadata["postprocessing"] == int8.postprocessing  # labels, or regression names/mean/std
    for step, original in zip(metadata["preprocessing"], int8.preprocessing, strict=True):
        assert {k: v for k, v in step.items() if k != "tokenizer"} == {"lowercase": True, **original} \
            if original["kind"] == "text" else step == original
        if original["kind"] == "text":
            assert step["tokenizer"]["pad_id"] == 0 and step["tokenizer"]["oov_id"] == 1
            assert step["vocabulary"] == original["vocabulary"] and step["max_length"] == original["max_length"]
    for variant in ("tflite-int8", "tflite-float16"):
        manifest = read_manifest(trained.variant_dir(name, variant))
        entry = metadata["files"][f"{name}_{variant.removeprefix('tflite-')}.tflite"]
        assert entry["variant"] == variant and entry["sha256"] == manifest.model.sha256
        assert entry["held_out"] == manifest.metrics["held_out"]
        for tensors, specs in ((entry["inputs"], manifest.inputs), (entry["outputs"], manifest.outputs)):
            assert [(t["name"], t["shape_signature"], t["dtype"], t["scale"], t["zero_point"]) for t in tensors] == \
                [(s.name, s.shape, s.dtype, s.scale, s.zero_point) for s in specs]
        assert entry["full_int8"] is (variant == "tflite-int8")
    onnx_manifest = read_manifest(trained.variant_dir(name, "onnx-float32"))
    ort_entry = metadata["files"][f"{name}.ort"]
    assert ort_entry["converted_from"]["sha256"] == onnx_manifest.model.sha256
    assert ort_entry["session_options"] == {"session.enable_saved_runtime_optimizations": "1"}
    assert [t["name"] for t in ort_entry["inputs"]] == [s.name for s in onnx_manifest.inputs]
    assert [t["shape"] for t in ort_entry["inputs"]] == [[1, *s.shape[1:]] for s in onnx_manifest.inputs]


def _tflite_tensors(path: Path) -> tuple[list[dict], list[dict]]:
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter.get_input_details(), interpreter.get_output_details()


@pytest.mark.parametrize("name,platform", [("cnn", "android"), ("nlp", "android"), ("cnn", "ios"), ("nlp", "ios")])
def test_snippets_name_the_real_tensors(packages, name: str, platform: str) -> None:
    package = packages[name, platform]
    ext = "kt" if platform == "android" else "swift"
    cls = name.capitalize()

    def shape_text(shape) -> str:
        dims = ", ".join(str(int(d)) for d in shape)
        return f"intArrayOf({dims})" if ext == "kt" else f"[{dims}]"

    litert = _file(package, f"{cls}Model.{ext}").read_text()
    inputs, outputs = _tflite_tensors(_file(package, f"{name}_int8.tflite"))  # as LiteRT reads the shipped file
    assert f'"{name}_int8.tflite"' in litert or f'"{name}_int8"' in litert
    for detail in inputs + outputs:
        assert f'"{detail["name"]}"' in litert
        assert shape_text(detail["shape"]) in litert
        scale, zero_point = detail["quantization"]
        if scale:
            assert re.search(rf"(, |zeroPoint: ){zero_point}\)", litert)  # the tensor check has the real zero point
            assert str(np.float32(scale)) in litert  # and scale, as the float32 LiteRT holds
    labels = json.loads(_file(package, f"{name}_metadata.json").read_text())["postprocessing"]["labels"]
    assert all(f'"{label}"' in litert for label in labels)
    if name == "nlp":  # token ids in, vocabulary read from the metadata shipped beside the model
        assert f'"{name}_metadata.json"' in litert or f'"{name}_metadata"' in litert
        assert "[a-z0-9]+(?:'[a-z]+)?" in litert
        assert inputs[0]["dtype"] == np.int32 and ("putInt(" in litert or "Int32" in litert)

    ort_snippet = _file(package, f"{cls}OrtModel.{ext}").read_text()
    session = _ort_session(_file(package, f"{name}.ort"))
    for node in session.get_inputs() + session.get_outputs():
        assert f'"{node.name}"' in ort_snippet
    for node in session.get_inputs():
        dims = ", ".join(str(d) for d in node.shape)
        assert (f"longArrayOf({dims})" if ext == "kt" else f"[{dims}]") in ort_snippet
    assert "session.enable_saved_runtime_optimizations" in ort_snippet


def _partitions(model_path: Path, checker, *args) -> usability_checker.PartitioningInfo:
    return checker(onnx_model_utils.ModelProtoWithShapeInfo(model_path).model_with_shape_info, True, *args)


@pytest.mark.parametrize("name", ["cnn", "nlp"])
def test_usability_summary_agrees_with_onnxruntimes_checker(trained: Workspace, packages, tmp_path: Path,
                                                           name: str) -> None:
    """The parsed summary against onnxruntime's checker called as a library on the same graph (batch fixed to 1,
    basic optimizations, as the command-line tool does)."""
    package = packages[name, "android"]
    model = onnx.load(str(trained.variant_dir(name, "onnx-float32") / "model.onnx"))
    for graph_input in model.graph.input:
        dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
        onnx_model_utils.make_input_shape_fixed(model.graph, graph_input.name, [1, *dims[1:]])
    onnx_model_utils.fix_output_shapes(model)
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    onnx_model_utils.optimize_model(tmp_path / "fixed.onnx", tmp_path / "optimized.onnx",
                                    use_external_initializers=True)

    summary = json.loads(_file(package, f"{name}_mobile_usability.json").read_text())
    assert summary == package.usability and summary["platform_eps"] == ["NNAPI"]
    checks = {"NNAPI": (usability_checker.check_nnapi_partitions,),
              "CoreML MLProgram": (usability_checker.check_coreml_partitions, "coreml_supported_mlprogram_ops.md")}
    for ep, (checker, *args) in checks.items():
        info = _partitions(tmp_path / "optimized.onnx", checker, *args)
        parsed = summary["execution_providers"][ep]
        assert (parsed["partitions"], parsed["supported_nodes"], parsed["total_nodes"]) == \
            (info.num_partitions, info.num_supported_nodes, info.num_nodes)
        assert sorted(parsed["unsupported_ops"]) == sorted(info.unsupported_ops)
    text = _file(package, f"{name}_mobile_usability.txt").read_text()
    assert f"Checking {name}.onnx for usability with ORT Mobile." in text  # as onnxruntime printed it
    assert "Checking NNAPI" in text and "Checking CoreML MLProgram" in text


def test_a_dynamic_batch_leaves_nnapi_nothing(trained: Workspace, tmp_path: Path) -> None:
    """Why the batch is fixed: onnxruntime's checker gives NNAPI no node of a dynamic-batch graph."""
    _, onnx_dir = _variants(trained, "cnn")
    package = package_mobile("android", [], onnx_dir, tmp_path / "dynamic", ort_batch=None)
    nnapi = package.usability["execution_providers"]["NNAPI"]
    assert nnapi["supported_nodes"] == 0 and nnapi["nodes_with_dynamic_input"] == nnapi["total_nodes"]
    assert nnapi["with_fixed_shapes"]["supported_nodes"] == nnapi["total_nodes"]
    session = _ort_session(tmp_path / "dynamic" / "cnn.ort")
    assert session.get_inputs()[0].shape[0] == "batch"


def test_one_side_only_is_packaged_and_the_rest_noted(trained: Workspace, tmp_path: Path) -> None:
    tflite, onnx_dir = _variants(trained, "nlp")
    only_tflite = package_mobile("ios", tflite, None, tmp_path / "tflite")
    assert {p.name for p in only_tflite.paths("tflite")} == {"nlp_int8.tflite", "nlp_float16.tflite"}
    assert not only_tflite.paths("ort") and not only_tflite.usability
    assert [p.name for p in only_tflite.paths("snippet")] == ["NlpModel.swift"]
    assert any("no ONNX variant" in note and "edgemaas compress nlp" in note for note in only_tflite.missing)

    only_onnx = package_mobile("android", [], onnx_dir, tmp_path / "onnx")
    assert [p.name for p in only_onnx.paths("ort")] == ["nlp.ort"] and not only_onnx.paths("tflite")
    assert [p.name for p in only_onnx.paths("snippet")] == ["NlpOrtModel.kt"]
    assert any("no TFLite variant" in note for note in only_onnx.missing)

    # No full int8: the float16 file is what the LiteRT snippet loads, with float32 input; the note says how.
    float16 = package_mobile("android", [tflite[1]], None, tmp_path / "float16")
    assert float16.snippet_model == "nlp_float16.tflite"
    assert any("no full-int8 TFLite" in note for note in float16.missing)
    inputs, outputs = _tflite_tensors(tmp_path / "float16" / "nlp_float16.tflite")
    snippet = (tmp_path / "float16" / "NlpModel.kt").read_text()
    assert f'"{inputs[0]["name"]}"' in snippet and f'"{outputs[0]["name"]}"' in snippet
    assert "output0.getFloat()" in snippet and "INPUT_0_SCALE" not in snippet  # float out, nothing to quantize


def test_repackaging_removes_what_the_new_package_does_not_make(trained: Workspace, tmp_path: Path) -> None:
    tflite, onnx_dir = _variants(trained, "cnn")
    package_mobile("android", tflite, onnx_dir, tmp_path)
    assert (tmp_path / "cnn.ort").exists()
    package_mobile("android", tflite, None, tmp_path)
    assert not (tmp_path / "cnn.ort").exists() and not (tmp_path / "CnnOrtModel.kt").exists()
    assert (tmp_path / "cnn_int8.tflite").exists()


def _copy_variant(trained: Workspace, name: str, variant: str, to: Path) -> Path:
    return Path(shutil.copytree(trained.variant_dir(name, variant), to / variant))


def test_bad_input_is_refused_and_nothing_is_written(trained: Workspace, tmp_path: Path) -> None:
    tflite, onnx_dir = _variants(trained, "cnn")
    out = tmp_path / "out"

    def refused(match: str, *args, **kwargs) -> None:
        with pytest.raises(UserError, match=match):
            package_mobile(*args, **kwargs)
        assert not out.exists() or not any(out.iterdir())

    refused("unknown mobile platform 'windows'; choose one of android, ios", "windows", tflite, onnx_dir, out)
    refused("nothing to package for android", "android", [], None, out)
    refused(r"no-such-dir: no such variant folder", "android", [tmp_path / "no-such-dir"], None, out)
    refused("holds a onnx model .onnx-float32., not TFLite; pass it as the ONNX variant", "android", [onnx_dir],
            None, out)
    refused("holds a tflite model .tflite-int8., not ONNX", "android", [], tflite[0], out)
    refused("not a variant of the same model", "ios", [tflite[0], trained.variant_dir("nlp", "tflite-float16")],
            None, out)
    refused("ort_batch must be 1 or more", "android", tflite, onnx_dir, out, ort_batch=0)

    tampered = _copy_variant(trained, "cnn", "tflite-int8", tmp_path)
    (tampered / "model.tflite").write_bytes((tampered / "model.tflite").read_bytes()[:-10])
    refused("does not match its manifest", "android", [tampered], None, out)


def test_a_model_the_tools_cannot_convert(trained: Workspace, tmp_path: Path) -> None:
    """An ONNX file that passes its manifest's hash but is not a model: alone it is refused with onnxruntime's own
    words; beside TFLite files it becomes a warning and the TFLite side ships."""
    broken = _copy_variant(trained, "cnn", "onnx-float32", tmp_path)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    manifest = read_manifest(broken)
    manifest.model.sha256 = sha256_file(broken / "model.onnx")
    manifest.save(broken)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"onnx-float32: onnxruntime's \w+ failed \(exit 1\): "
                                        r"google.protobuf.message.DecodeError: Error parsing message"):
        package_mobile("android", [], broken, out)
    assert not any(out.iterdir())

    tflite, _ = _variants(trained, "cnn")
    package = package_mobile("android", tflite, broken, out)
    assert any("failed" in w and "the .ort side was not packaged" in w for w in package.warnings)
    assert {p.name for p in package.paths("tflite")} == {"cnn_int8.tflite", "cnn_float16.tflite"}
    assert not package.paths("ort") and not package.usability
    assert not re.search(r"\.ort\b", (out / "cnn_metadata.json").read_text())


def test_a_model_file_you_bring(trained: Workspace, tmp_path: Path) -> None:
    """A brought .tflite or .onnx has one side: it is packaged, and the notes say what a brought file cannot give."""
    from edgemaas.user_models.importing import import_model

    ws = Workspace(tmp_path / "ws")
    digits = tmp_path / "digits.tflite"
    shutil.copyfile(trained.variant_dir("cnn", "tflite-int8") / "model.tflite", digits)
    import_model(digits, ws, labels=[str(d) for d in range(10)])
    package = package_mobile("android", [ws.variant_dir("digits", "imported")], None, tmp_path / "digits")
    assert package.snippet_model == "digits_imported.tflite"
    inputs, _ = _tflite_tensors(tmp_path / "digits" / "digits_imported.tflite")
    assert f'"{inputs[0]["name"]}"' in (tmp_path / "digits" / "DigitsModel.kt").read_text()
    assert any("cannot be re-quantized" in note for note in package.missing)
    assert any("no ONNX variant" in note and "compress MODEL.tflite" in note for note in package.missing)

    intents = tmp_path / "intents.onnx"
    shutil.copyfile(trained.variant_dir("nlp", "onnx-float32") / "model.onnx", intents)
    import_model(intents, ws)
    package = package_mobile("ios", [], ws.variant_dir("intents", "imported"), tmp_path / "intents")
    assert [p.name for p in package.paths("ort")] == ["intents.ort"]
    assert any("cannot become TFLite" in note for note in package.missing)
    # Token ids with no vocabulary (the manifest of a bare .onnx has none): no snippet, and the warning says why.
    assert not package.paths("snippet")
    assert any("IntentsOrtModel.swift" in w and "int32 with no text vocabulary" in w for w in package.warnings)


def _onnx_variant(source: Path, directory: Path, make) -> Path:
    """A variant folder for an ONNX model made by one of the project's onnxruntime passes (no TensorFlow)."""
    directory.mkdir()
    make(str(directory / "model.onnx"))
    manifest = read_manifest(source)
    manifest.variant, manifest.model.sha256 = directory.name, sha256_file(directory / "model.onnx")
    manifest.model.size_bytes = (directory / "model.onnx").stat().st_size
    manifest.save(directory)
    return directory


def test_dynamic_quantization_is_flagged_for_phone_accelerators(trained: Workspace, tmp_path: Path) -> None:
    from edgemaas.compress.passes.onnx_passes import quantize_dynamic

    source = trained.variant_dir("cnn", "onnx-float32")
    dynamic = _onnx_variant(source, tmp_path / "onnx-dynamic",
                            lambda out: quantize_dynamic(str(source / "model.onnx"), out))
    package = package_mobile("android", [], dynamic, tmp_path / "out")
    nnapi = package.usability["execution_providers"]["NNAPI"]
    assert nnapi["suitability"] != "YES" and "ai.onnx:DynamicQuantizeLinear" in nnapi["unsupported_ops"]
    (warning,) = package.warnings
    assert f"NNAPI would take {nnapi['supported_nodes']}/{nnapi['total_nodes']} nodes" in warning
    assert "onnx-float32, onnx-qdq" in warning


def test_a_qdq_ort_that_cannot_replay_its_saved_optimizations(trained: Workspace, tmp_path: Path) -> None:
    """onnxruntime 1.32 converts nlp's static-QDQ graph to .ort but cannot load it with the saved optimizations
    replayed ("Not enough produced nodes in the runtime optimization record"). The package says so, and the
    metadata and snippet load it without the replay, which works and matches the QDQ .onnx."""
    from edgemaas.compress.passes.onnx_passes import quantize_static

    source = trained.variant_dir("nlp", "onnx-float32")
    float_model = load_model(source)
    (calibration,) = float_model.transform([np.load(trained.data_file("nlp"))["x_train"][:64]])
    np.save(tmp_path / "calibration.npy", calibration)
    qdq = _onnx_variant(source, tmp_path / "onnx-qdq", lambda out: quantize_static(
        str(source / "model.onnx"), out, str(tmp_path / "calibration.npy")))

    package = package_mobile("android", [], qdq, tmp_path / "out")
    assert any("does not load with its saved runtime optimizations replayed" in w for w in package.warnings)
    entry = json.loads((tmp_path / "out" / "nlp_metadata.json").read_text())["files"]["nlp.ort"]
    assert entry["session_options"] == {} and "Not enough produced nodes" in entry["replay_error"]
    assert "enable_saved_runtime_optimizations" not in (tmp_path / "out" / "NlpOrtModel.kt").read_text()
    with pytest.raises(Exception, match="Not enough produced nodes"):  # the onnxruntime behaviour noted above
        _ort_session(tmp_path / "out" / "nlp.ort")

    session = ort.InferenceSession(str(tmp_path / "out" / "nlp.ort"), providers=["CPUExecutionProvider"])
    (features,) = float_model.transform([np.load(trained.data_file("nlp"))["x_test"][:SAMPLES]])
    expected = load_model(qdq).backend.run([features])[0]
    got = np.concatenate([session.run(None, {"tokens": features[i:i + 1]})[0] for i in range(len(features))])
    # The arm conversion keeps int8 QDQ kernels where this x86 session of the .onnx rounds differently: at most one
    # step of the softmax output's 1/255 quantization apart.
    np.testing.assert_allclose(got, expected, atol=1 / 255 + 1e-6)
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.95


def test_a_several_output_model_returns_every_output_under_its_signature_name(tmp_path: Path) -> None:
    """Five outputs (one a 16x16 mask) whose signature names differ from their tensor names: each snippet returns
    every output, keyed by its signature name and decoded from the buffer of that very tensor."""
    import subprocess
    import sys

    from edgemaas.user_models.importing import import_model

    code = "import sys; from pathlib import Path; from tests.tensor_models import landmarks_tflite; " \
           "landmarks_tflite(Path(sys.argv[1]))"  # TensorFlow in a child process
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "landmarks.tflite")], check=True, timeout=300,
                   cwd=Path(__file__).resolve().parents[2], capture_output=True)
    ws = Workspace(tmp_path / "ws")
    import_model(tmp_path / "landmarks.tflite", ws)
    sizes = {"embedding": 8, "pose": 3, "landmarks": 10, "mask": 256, "score": 1}
    interpreter = Interpreter(model_path=str(tmp_path / "landmarks.tflite"))
    by_index = {d["index"]: name for name, d in interpreter.get_signature_runner().get_output_details().items()}
    position = {by_index[d["index"]]: i for i, d in enumerate(interpreter.get_output_details())}
    for platform, pattern in (("android", r'"(\w+)" to decode(\d+)\(output\d+\)'), ("ios", r'"(\w+)": try decode(\d+)\(')):
        package_mobile(platform, [ws.variant_dir("landmarks", "imported")], None, tmp_path / platform)
        snippet = next((tmp_path / platform).glob("LandmarksModel.*")).read_text()
        returned = {name: int(index) for name, index in re.findall(pattern, snippet)}
        assert returned == position, (platform, returned)  # every output, each from its own tensor
        metadata = json.loads((tmp_path / platform / "landmarks_metadata.json").read_text())
        outputs = metadata["files"]["landmarks_imported.tflite"]["outputs"]
        assert {t["key"]: int(np.prod(t["shape"])) for t in outputs} == sizes
