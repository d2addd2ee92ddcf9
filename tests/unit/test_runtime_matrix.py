"""The Lambda runtime matrix (issue 14), the ELF glibc reader on real shared libraries, the build table's cost cell
and the templates' priced memory. No process, no TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import pytest

from edgemaas.build import cost_text
from edgemaas.packaging.awslambda.serverless import with_priced_memory
from edgemaas.packaging.awslambda.loadcheck import op_version_problem, probe_result
from edgemaas.packaging.common.dependencies import pinned
from edgemaas.packaging.common.glibc import check_tree, glibc_needed, is_elf, parse_version
from edgemaas.packaging.common.matrix import LAMBDA_PYTHONS, explain_runtime, matrix, plan


def test_amazon_linux_2_gets_the_releases_whose_elf_files_fit_glibc_226() -> None:
    assert plan("3.11", "x86_64", "tflite").requirements == ("numpy==1.26.4", "ai-edge-litert==1.4.0")
    assert plan("3.10", "x86_64", "onnx").requirements == ("numpy==1.26.4", "onnxruntime==1.16.3")
    for python in ("3.10", "3.11"):
        arm = plan(python, "arm64", "tflite")
        assert (arm.wanted, arm.ships, arm.requirements) == ("tflite", "onnx", ("numpy==1.26.4",
                                                                                "onnxruntime==1.16.3"))
        assert arm.why.startswith("no TFLite interpreter wheel loads on Amazon Linux 2 arm64")
        assert arm.os.glibc == (2, 26)


def test_amazon_linux_2023_gets_the_releases_the_model_was_evaluated_with() -> None:
    for python in ("3.12", "3.13"):
        for arch in ("x86_64", "arm64"):
            chosen = plan(python, arch, "tflite")
            assert chosen.ships == "tflite" and chosen.os.glibc == (2, 34)
            assert chosen.requirements == (pinned("numpy"), pinned("ai-edge-litert"))


def test_every_runtime_has_something_that_ships_and_no_other_python_is_accepted() -> None:
    rows = matrix()
    assert len(rows) == len(LAMBDA_PYTHONS) * 2 * 2
    assert all(p.ships for p in rows)
    with pytest.raises(ValueError, match="Lambda has no python3.9 runtime"):
        plan("3.9", "x86_64", "tflite")


def test_explain_runtime_is_a_table_of_every_target_or_one() -> None:
    table = explain_runtime()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| Lambda runtime | arch | OS (glibc) |") and len(lines) == 2 + 16
    one = explain_runtime("3.11", "arm64").strip().splitlines()
    assert len(one) == 4 and "onnx (fallback)" in one[2] and "Amazon Linux 2 (2.26)" in one[2]
    with pytest.raises(ValueError):
        explain_runtime("3.9")


def test_glibc_reader_on_numpys_own_shared_libraries() -> None:
    root = Path(numpy.__file__).parent
    libraries = [p for p in root.rglob("*.so") if is_elf(p)]
    assert libraries
    needed, machine = glibc_needed(libraries[0])
    assert machine in ("EM_X86_64", "EM_AARCH64") and needed is not None and needed >= (2, 2)
    fits = check_tree(root, (9, 99), "a future glibc")
    assert fits.ok and fits.files >= len(libraries) and fits.needed is not None
    too_old = check_tree(root, (2, 0), "glibc 2.0")
    assert not too_old.ok and too_old.worst in too_old.too_new
    assert too_old.problem().endswith("need a newer glibc than glibc 2.0 provides (2.0): the function could not "
                                      "import them")
    assert too_old.to_dict()["needed"] == ".".join(map(str, too_old.needed))
    assert parse_version("2.26") == (2, 26)


def test_cost_cell_lists_both_architectures_at_the_priced_memory() -> None:
    assert cost_text({}) == "-"
    assert cost_text({"x86_64": "$0.21 (float $0.26)", "arm64": "$0.17", "memory": "1769 MB"}) == \
        "x86_64 $0.21 (float $0.26)\narm64 $0.17\nat 1769 MB"


def _record(variant: str = "tflite-int8") -> dict:
    return {"model": "cnn", "model_format": "tflite", "variant": variant, "memory_mb": 512}


def test_templates_take_the_gate_priced_memory_for_the_variant_that_ships(tmp_path: Path) -> None:
    assert with_priced_memory(_record(), tmp_path) == _record()  # no selection: the package's memory
    (tmp_path / "cnn").mkdir()
    selection = {"chosen": {"tflite": "tflite-int8"}, "default": "tflite-int8",
                 "lambda": {"formats": {"tflite": {"memory_mb": 1769}}}}
    (tmp_path / "cnn" / "selection.json").write_text(json.dumps(selection))
    assert with_priced_memory(_record(), tmp_path)["memory_mb"] == 1769
    assert with_priced_memory(_record("tflite-float32"), tmp_path)["memory_mb"] == 512  # priced another variant


def test_op_version_problem_reads_what_each_runtime_says() -> None:
    """The messages as ai-edge-litert 1.4.0 and onnxruntime 1.16.3 print them (captured 2026-12-02)."""
    litert = ("ModelLoadError: Didn't find op for builtin opcode 'SOFTMAX' version '4'. An older version of this "
              "builtin might be supported. Are you using an old TFLite binary with a newer model?")
    assert op_version_problem(litert) == "op SOFTMAX version 4"
    opset = ("[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/"
             "model_load_utils.h:46 void onnxruntime::model_load_utils::ValidateOpsetForDomain(...) ONNX Runtime "
             "only *guarantees* support for models stamped with official released onnx opset versions. Opset 20 is "
             "under development and support for this is limited. The operator schemas and or other functionality "
             "may change before next ONNX release and in this case ONNX Runtime will not guarantee backward "
             "compatibility. Current official support for domain ai.onnx is till opset 19.\n")
    assert op_version_problem(opset) == "ai.onnx opset 20 (it supports up to 19)"
    ir = ("Load model from m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/model.cc:149 onnxruntime::Model::"
          "Model(...) Unsupported model IR version: 10, max supported IR version: 9\n")
    assert op_version_problem(ir) == "ONNX IR version 10 (it reads up to 9)"
    assert op_version_problem("ValueError: input 'x' has shape [1, 3]") is None


def test_probe_result_tells_a_failed_load_from_a_failed_or_crashed_smoke_request() -> None:
    """What the package-time probe printed, read back: only a load failure may fall back to the other format; a
    request that failed or crashed after the load names the shapes it sent (PaddleOCR's recogniser crashes
    onnxruntime 1.16.3 with SIGFPE at [1, 3, 1, 1])."""
    ran = "Python 3.11 x86_64: numpy==1.26.4, onnxruntime==1.16.3"
    loaded = '{"loaded": true, "shapes": {"x": [1, 3, 1, 1]}}\n'
    crashed = probe_result(-8, loaded, "", True, ran)
    assert (crashed.ok, crashed.failed_at) == (False, "request")
    assert crashed.error == "the smoke request (x [1, 3, 1, 1]) crashed the process (killed by SIGFPE)"
    refused = probe_result(0, loaded + '{"ok": false, "failed_at": "request", "error": "{\\"error\\": \\"bad\\"}"}\n',
                           "", True, ran)
    assert refused.failed_at == "request" and refused.error.startswith("the smoke request (x [1, 3, 1, 1]) failed: ")
    load = probe_result(0, '{"ok": false, "failed_at": "load", "error": "ModelLoadError: Opset 20 is under '
                           'development. Current official support for domain ai.onnx is till opset 19."}\n', "", False, ran)
    assert load.failed_at == "load" and load.op_problem() == "ai.onnx opset 20 (it supports up to 19)"
    died = probe_result(1, "", "Traceback ...\nImportError: libfoo.so: cannot open shared object file", True, ran)
    assert died.failed_at == "load" and died.error.endswith("ImportError: libfoo.so: cannot open shared object file")
    answered = probe_result(0, loaded + '{"ok": true, "failed_at": "", "backend": "onnxruntime", "error": ""}\n', "",
                            True, ran)
    assert answered.ok and answered.backend == "onnxruntime" and answered.failed_at == ""
