"""The microcontroller target: TensorFlow Lite Micro sources from the full-int8 variants of the four built-in models.

gcc/g++ compile what is generated and a small harness runs it; the LiteRT interpreter and the edgemaas runtime
check the op list and the shipped (shape-frozen) model. TFLM's own headers are not available offline, so the
resolver header compiles against a stand-in with the method names of the table taken from TFLM's real header.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from edgemaas.errors import UserError
from edgemaas.packaging.mcu.sources import McuPackage, c_camel, c_identifier, package_mcu
from edgemaas.packaging.mcu.tflite_graph import buffer_offsets, read_graph
from edgemaas.packaging.mcu.tflm_ops import TFLM_BUILTIN_OPS, TFLM_CUSTOM_OPS
from edgemaas.runtime import load_model, read_manifest
from edgemaas.runtime.manifest import sha256_bytes
from edgemaas.workspace import Workspace

from tests.conftest import BUILTINS

INT8 = "tflite-int8"


def compiler(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is needed to compile the generated C/C++: apt-get install gcc g++")
    return path


def run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def packages(trained: Workspace, tmp_path_factory: pytest.TempPathFactory) -> dict[str, McuPackage]:
    dist = tmp_path_factory.mktemp("mcu")
    return {name: package_mcu(trained.variant_dir(name, INT8), dist / name / "mcu") for name in BUILTINS}


def out(package: McuPackage) -> Path:
    return Path(package.out_dir)


def c_harness(ident: str, camel: str) -> str:
    """C (not C++): reads the array through the header, sizes a file-scope array with the arena constant, and
    writes the bytes out for the test to compare."""
    return f"""
#include <stdint.h>
#include <stdio.h>
#include "{ident}_model_data.h"

static unsigned char tensor_arena[k{camel}TensorArenaSize];

int main(int argc, char **argv) {{
  FILE *dump;
  if (argc != 2 || (dump = fopen(argv[1], "wb")) == NULL) return 2;
  if (fwrite(g_{ident}_model_data, 1, g_{ident}_model_data_len, dump) != g_{ident}_model_data_len) return 3;
  fclose(dump);
  printf("%u %u %u %u\\n", g_{ident}_model_data_len, (unsigned)((uintptr_t)g_{ident}_model_data % 16),
         (unsigned)sizeof(tensor_arena), (unsigned)k{camel}ModelDataLen);
  return 0;
}}
"""


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("language", ["c++", "c"])
def test_array_compiles_and_holds_the_model_aligned(packages: dict[str, McuPackage], name: str, language: str,
                                                     tmp_path: Path) -> None:
    package = packages[name]
    ident = c_identifier(name)
    camel = c_camel(ident)
    shipped = (out(package) / "model.tflite").read_bytes()
    (tmp_path / "harness.c").write_text(c_harness(ident, camel))
    source = out(package) / f"{ident}_model_data.cc"
    strict = ["-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{out(package)}"]
    if language == "c++":  # the .cc as C++, linked with a C caller through the header's extern "C"
        run([compiler("g++"), "-std=c++11", *strict, "-c", str(source), "-o", "model_data.o"], tmp_path)
    else:  # the same .cc compiled as C99
        run([compiler("gcc"), "-x", "c", "-std=c99", *strict, "-c", str(source), "-o", "model_data.o"], tmp_path)
    run([compiler("gcc"), "-std=c99", *strict, "-c", "harness.c", "-o", "harness.o"], tmp_path)
    run([compiler("g++"), "harness.o", "model_data.o", "-o", "harness"], tmp_path)
    length, misalignment, arena, constant = map(int, run(["./harness", "dump.bin"], tmp_path).split())

    assert length == constant == len(shipped) == package.model_bytes
    assert misalignment == 0
    assert arena == package.arena_bytes
    assert (tmp_path / "dump.bin").read_bytes() == shipped
    assert sha256_bytes(shipped) == package.sha256
    assert package.sha256 in (out(package) / f"{ident}_model_data.h").read_text()


def test_weights_inside_the_array_stay_aligned(packages: dict[str, McuPackage]) -> None:
    """A frozen model is repacked: its weight buffers must start on 16-byte boundaries like the converter's
    schema asks, so that TFLM kernels can read int32 biases in place."""
    frozen = [p for p in packages.values() if p.frozen_ops]
    assert frozen, "the unrolled GRUs and the CNN carry dynamic-batch shape ops"
    for package in frozen:
        offsets = buffer_offsets((out(package) / "model.tflite").read_bytes())
        assert offsets and all(offset % 16 == 0 for offset, _ in offsets), package.name


@pytest.mark.parametrize("name", BUILTINS)
def test_resolver_registers_exactly_the_ops_the_interpreter_reports(packages: dict[str, McuPackage],
                                                                    trained: Workspace, name: str) -> None:
    package = packages[name]
    shipped = Interpreter(model_path=str(out(package) / "model.tflite"))
    reported = {op["op_name"] for op in shipped._get_ops_details()}
    assert set(package.ops) == reported
    assert len(package.ops) == package.resolver_size == len(set(package.ops))
    assert sum(package.op_counts.values()) == len(shipped._get_ops_details())

    header = (out(package) / f"{c_identifier(name)}_op_resolver.h").read_text()
    calls = re.findall(r"if \(resolver\.(Add\w+)\(\) != kTfLiteOk\)", header)
    assert calls == package.resolver_methods == [TFLM_BUILTIN_OPS[op] for op in package.ops]
    assert re.search(rf"OpCount = {package.resolver_size};", header)
    assert "tflite::MicroMutableOpResolver<k" in header

    # What the variant ran, less what was folded into constants, is what the resolver registers.
    source = Interpreter(model_path=str(trained.variant_dir(name, INT8) / "model.tflite"))
    source_ops = {op["op_name"] for op in source._get_ops_details()}
    assert reported <= source_ops
    assert source_ops - reported <= set(package.frozen_ops)


@pytest.mark.parametrize("name", BUILTINS)
def test_shipped_graph_has_fixed_shapes_only(packages: dict[str, McuPackage], name: str) -> None:
    """TFLM has no dynamic shapes (its FILL refuses a computed size): after freezing, no node computes from
    shapes or constants alone, and no tensor keeps a -1 dimension."""
    data = (out(packages[name]) / "model.tflite").read_bytes()
    graph = read_graph(data)
    for op in graph.ops:
        assert op.name != "SHAPE"
        assert not all(graph.tensors[i].constant for i in op.inputs if i >= 0), op
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    signatures = [t.shapeSignature for t in model.subgraphs[0].tensors if t.shapeSignature is not None]
    if packages[name].frozen_ops:  # a graph without shape ops (linear) ships as converted, batch signature kept
        assert not any(-1 in list(s) for s in signatures)


def tflm_api_stand_in() -> str:
    """tensorflow/lite/micro/micro_mutable_op_resolver.h reduced to its API surface, generated from the table:
    every AddXxx() registers one op and fails past the template's op count, as TFLM's does."""
    methods = "\n".join(f"  TfLiteStatus {m}() {{ return Register(); }}"
                        for m in [*TFLM_BUILTIN_OPS.values(), *TFLM_CUSTOM_OPS.values()])
    return f"""#pragma once
typedef enum {{ kTfLiteOk = 0, kTfLiteError = 1 }} TfLiteStatus;
namespace tflite {{
template <unsigned int tOpCount>
class MicroMutableOpResolver {{
 public:
{methods}
  unsigned int GetRegistrationLength() {{ return length_; }}
 private:
  TfLiteStatus Register() {{
    if (length_ >= tOpCount) return kTfLiteError;
    ++length_;
    return kTfLiteOk;
  }}
  unsigned int length_ = 0;
}};
}}  // namespace tflite
"""


@pytest.mark.parametrize("name", ["cnn", "nlp"])
def test_resolver_header_compiles_and_fills_the_resolver_exactly(packages: dict[str, McuPackage], name: str,
                                                                 tmp_path: Path) -> None:
    package = packages[name]
    ident = c_identifier(name)
    camel = c_camel(ident)
    api = tmp_path / "tensorflow" / "lite" / "micro"
    api.mkdir(parents=True)
    (api / "micro_mutable_op_resolver.h").write_text(tflm_api_stand_in())
    (tmp_path / "main.cc").write_text(f"""
#include <cstdio>
#include "{ident}_model_data.h"
#include "{ident}_op_resolver.h"
int main() {{
  {camel}OpResolver resolver;
  if (Register{camel}Ops(resolver) != kTfLiteOk) return 1;
  std::printf("%u %u\\n", resolver.GetRegistrationLength(), k{camel}OpCount);
  return 0;
}}
""")
    run([compiler("g++"), "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path}", f"-I{out(package)}",
         "main.cc", "-o", "main"], tmp_path)
    registered, count = map(int, run(["./main"], tmp_path).split())
    assert registered == count == package.resolver_size


@pytest.mark.parametrize("name", BUILTINS)
def test_arena_estimate_is_sane(packages: dict[str, McuPackage], name: str) -> None:
    package = packages[name]
    arena = package.arena
    graph = read_graph((out(package) / "model.tflite").read_bytes())
    # The least any plan can take: the bytes alive together at the busiest op (16-byte aligned each).
    planned = {i for i, t in enumerate(graph.tensors) if not t.constant and not t.variable}
    aligned = {i: -(-graph.tensors[i].nbytes // 16) * 16 for i in planned}
    first = {i: 0 for i in graph.inputs}
    last = {i: len(graph.ops) - 1 for i in graph.outputs}
    for step, op in enumerate(graph.ops):
        for i in (*op.inputs, *op.outputs):
            first.setdefault(i, step)
            last[i] = max(last.get(i, step), step)
    busiest = max(sum(aligned[i] for i in planned if first[i] <= step <= last[i]) for step in range(len(graph.ops)))
    assert arena.largest_activation == max(aligned.values())
    assert busiest <= arena.activations <= arena.activations_sum == sum(aligned.values())
    assert arena.total >= arena.persistent + max(arena.activations, arena.planning)
    assert arena.total % 1024 == 0 and arena.total == package.arena_bytes


@pytest.mark.parametrize("name", BUILTINS)
def test_shipped_model_predicts_like_the_variant(packages: dict[str, McuPackage], trained: Workspace,
                                                 name: str) -> None:
    """model.tflite + manifest.json in the package serve through the edgemaas runtime, batch 1 after freezing,
    with the int8 variant's outputs on held-out data."""
    shipped, variant = load_model(out(packages[name])), load_model(trained.variant_dir(name, INT8))
    x = np.load(trained.data_file(name))["x_test"][:24]
    expected = variant.output_values(variant.transform([x]))
    assert np.array_equal(shipped.output_values(shipped.transform([x])), expected)
    assert read_manifest(out(packages[name])).model.sha256 == packages[name].sha256


def test_summary_and_files(packages: dict[str, McuPackage]) -> None:
    package = packages["cnn"]
    names = sorted(p.name for p in out(package).iterdir())
    assert names == sorted(Path(f).name for f in package.files)
    assert not [p for p in out(package).parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    summary = json.loads((out(package) / "summary.json").read_text())
    assert summary["arena_bytes"] == package.arena_bytes and summary["ops"] == package.ops
    text = (out(package) / "SUMMARY.md").read_text()
    assert "RecordingMicroInterpreter" in text and "arena_used_bytes()" in text and "approximately" in text
    assert f"{package.arena_bytes} bytes" in text and f"{package.model_bytes} bytes" in text
    spec = read_manifest(out(package)).inputs[0]
    header = (out(package) / "cnn_model_data.h").read_text()
    assert f"kCnnInput0ZeroPoint = {spec.zero_point}," in header
    assert np.float32(re.search(r"kCnnInput0Scale = ([0-9.e+-]+)f;", header).group(1)) == np.float32(spec.scale)


def test_repackaging_replaces_the_directory(packages: dict[str, McuPackage], trained: Workspace,
                                            tmp_path: Path) -> None:
    target = tmp_path / "mcu"
    target.mkdir()
    (target / "stale.h").write_text("old")
    package = package_mcu(trained.variant_dir("linear", INT8), target)
    assert not (target / "stale.h").exists()
    assert sorted(p.name for p in target.iterdir()) == sorted(Path(f).name for f in package.files)
    assert not package.frozen_ops  # one FULLY_CONNECTED: nothing to fold, the variant's bytes ship as they are
    assert (target / "model.tflite").read_bytes() == (trained.variant_dir("linear", INT8) / "model.tflite").read_bytes()


@pytest.mark.parametrize("variant", ["tflite-float32", "tflite-float16", "onnx-float32"])
def test_float_model_refused_with_what_to_do(trained: Workspace, variant: str, tmp_path: Path) -> None:
    target = tmp_path / "mcu"
    with pytest.raises(UserError) as refused:
        package_mcu(trained.variant_dir("cnn", variant), target)
    message = str(refused.value)
    assert "`edgemaas compress cnn` builds tflite-int8" in message and "--variant tflite-int8" in message
    assert ("float model" in message) if variant.startswith("tflite") else ("onnx model" in message)
    assert not target.exists()


def edited_variant(trained: Workspace, tmp_path: Path, op: str, custom: str = "") -> Path:
    """A copy of cnn's int8 variant whose SOFTMAX node is relabelled `op` (or a custom op), manifest re-hashed:
    the refusal is decided from the graph before anything runs it."""
    source = trained.variant_dir("cnn", INT8)
    model = schema.ModelT.InitFromPackedBuf((source / "model.tflite").read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    code = next(c for c in model.operatorCodes if names[max(c.builtinCode, c.deprecatedBuiltinCode)] == "SOFTMAX")
    code.builtinCode = getattr(schema.BuiltinOperator, op)
    code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    code.customCode = custom.encode() if custom else None
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    copy = tmp_path / "edited"
    copy.mkdir()
    data = bytes(builder.Output())
    (copy / "model.tflite").write_bytes(data)
    manifest = read_manifest(source)
    manifest.model.sha256, manifest.model.size_bytes = sha256_bytes(data), len(data)
    manifest.save(copy)
    return copy


def test_op_tflm_lacks_refused_naming_it_and_the_fix(trained: Workspace, tmp_path: Path) -> None:
    previous = package_mcu(trained.variant_dir("linear", INT8), tmp_path / "mcu")
    with pytest.raises(UserError) as refused:
        package_mcu(edited_variant(trained, tmp_path, "GELU"), tmp_path / "mcu")
    message = str(refused.value)
    assert "no kernel for GELU (1 node)" in message and "relu" in message
    # Refused: the package already there is left as it was.
    assert sorted(str(p) for p in (tmp_path / "mcu").iterdir()) == sorted(previous.files)


def test_custom_op_refused(trained: Workspace, tmp_path: Path) -> None:
    with pytest.raises(UserError) as refused:
        package_mcu(edited_variant(trained, tmp_path, "CUSTOM", custom="MyFancyOp"), tmp_path / "mcu")
    message = str(refused.value)
    assert "custom op 'MyFancyOp'" in message and 'AddCustom("MyFancyOp"' in message
    assert not (tmp_path / "mcu").exists()


def test_not_a_flatbuffer_refused(trained: Workspace, tmp_path: Path) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(trained.variant_dir("cnn", INT8), copy)
    (copy / "model.tflite").write_bytes(b"not a model at all")
    with pytest.raises(UserError, match="does not match its manifest"):
        package_mcu(copy, tmp_path / "mcu")
    manifest = read_manifest(copy)
    manifest.model.sha256 = sha256_bytes(b"not a model at all")
    manifest.save(copy)
    with pytest.raises(UserError, match="not a TFLite flatbuffer"):
        package_mcu(copy, tmp_path / "mcu")
    assert not (tmp_path / "mcu").exists()


@pytest.mark.parametrize("name", BUILTINS)
def test_real_tflite_micro_runs_the_array_in_the_estimated_arena(packages: dict[str, McuPackage],
                                                                 trained: Workspace, name: str) -> None:
    """TensorFlow Lite Micro's own interpreter (the tflite-micro package: TFLM's kernels and memory planner) loads
    the exact bytes of the C array into an arena of the generated size, and answers like LiteRT on held-out data."""
    try:
        from tflite_micro.python.tflite_micro import runtime as tflm
    except ImportError:
        pytest.fail("TensorFlow Lite Micro's Python interpreter is needed: pip install tflite-micro")
    from edgemaas.runtime.model import to_tensor as _to_tensor

    package = packages[name]
    content = (out(package) / "model.tflite").read_bytes()
    micro = tflm.Interpreter.from_bytes(content, arena_size=package.arena_bytes)  # raises if the arena is short
    shipped = load_model(out(package))
    samples = np.load(trained.data_file(name))["x_test"][:16]
    for i in range(len(samples)):
        feeds = [_to_tensor(a, s) for a, s in zip(shipped.transform([samples[i:i + 1]]), shipped.backend.inputs)]
        for index, feed in enumerate(feeds):
            micro.set_input(feed, index)
        micro.invoke()
        expected = shipped.backend.run(feeds)[0]
        got = micro.get_output(0)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.abs(got.astype(np.int32) - expected.astype(np.int32)).max() <= 1, (name, got, expected)
        micro.reset()
