"""Phone packages (`edgemaas package NAME --target android|ios`): what an app bundles to run the model on a phone.

From a model's TFLite variants (full int8 and float16, typically) and one ONNX variant, `package_mobile` writes into
`out_dir`:

- `<name>_int8.tflite`, `<name>_float16.tflite` (one file per TFLite variant given): NPU delegates want full int8;
- `<name>.ort` and `<name>.required_operators.config`, made by onnxruntime's `convert_onnx_models_to_ort`;
- `<name>_mobile_usability.txt` (onnxruntime's `check_onnx_model_mobile_usability`, as it prints it) and
  `<name>_mobile_usability.json` (the NNAPI and Core ML partitions, parsed);
- `<name>_metadata.json`: what the app needs beside the model files (labels, normalisation or tokenizer, and every
  file's tensors with their quantization);
- Kotlin (LiteRT Interpreter API, onnxruntime-android) or Swift (TensorFlowLiteSwift, onnxruntime-objc) classes
  rendered from `templates/mobile/` with the real tensor names, shapes and quantization;
- `mobile.json`: this record (every file with its size and sha256, the usability summary, what is missing).

The ONNX side fixes the batch dimension to 1 before converting: NNAPI and Core ML take no node whose input shape is
dynamic (the usability checker reports 0 of 13 nodes for `cnn` with a dynamic batch, 13 of 13 with batch 1), and a
phone app classifies one sample at a time. The `.ort` uses the *Runtime* optimization style: the fusions that
`Fixed` bakes in (FusedConv and the like, com.microsoft contrib ops) are invisible to the NNAPI and Core ML execution
providers, which decide their partitions on the device; `Runtime` keeps those nodes plain and saves the fusions to
be replayed on whatever stays on the CPU (session option `session.enable_saved_runtime_optimizations=1`, which the
generated snippets set). The converter targets `arm` (phones), which lets it keep int8 QDQ nodes.

Everything is staged in a hidden folder inside `out_dir` and moved into place only when all of it is made, so a
failure leaves the previous package as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgemaas.errors import StageFailed, UserError
from edgemaas.fsutil import atomic_write_json, atomic_write_text
from edgemaas.isolate import run_isolated
from edgemaas.runtime import MANIFEST_NAME, Manifest, ModelLoadError, TensorSpec, read_manifest
from edgemaas.runtime.manifest import read_verified_model, sha256_file
from edgemaas.runtime.text import OOV_ID, PAD_ID, TOKEN_PATTERN
from edgemaas.packaging.common.templates import register_filters, render

PLATFORMS = ("android", "ios")
RECORD_NAME = "mobile.json"
ORT_OPTIMIZATION_STYLE = "Runtime"
ORT_SESSION_OPTIONS = {"session.enable_saved_runtime_optimizations": "1"}
ORT_TARGET_PLATFORM = "arm"
TOOL_TIMEOUT_S = 300
# The execution providers onnxruntime's usability checker reports, and which of them each platform can use.
USABILITY_EPS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")
PLATFORM_EPS = {"android": ("NNAPI",), "ios": ("CoreML NeuralNetwork", "CoreML MLProgram")}
# Tensor types the generated snippets can fill and read, with their size in bytes.
_ITEM_BYTES = {"float32": 4, "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8}
_SNIPPETS = {
    "android": (("litert.kt.j2", "{cls}Model.kt"), ("ort.kt.j2", "{cls}OrtModel.kt")),
    "ios": (("litert.swift.j2", "{cls}Model.swift"), ("ort.swift.j2", "{cls}OrtModel.swift")),
}


@dataclass
class PackagedFile:
    name: str  # file name inside out_dir
    role: str  # tflite | ort | ort-config | metadata | usability-report | usability-summary | snippet
    size_bytes: int
    sha256: str
    variant: str = ""  # the model variant the file was made from, for model files and snippets


@dataclass
class MobilePackage:
    platform: str
    model: str
    out_dir: str
    files: list[str] = field(default_factory=list)  # path of every file written into out_dir
    artifacts: list[PackagedFile] = field(default_factory=list)  # the same files: role, size, sha256, variant
    snippet_model: str = ""  # the .tflite file the LiteRT snippet loads
    # Parsed usability report: per execution provider, partitions and nodes (as is, and with fixed shapes).
    usability: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # what could not be packaged, and how to get it
    warnings: list[str] = field(default_factory=list)

    def paths(self, role: str) -> list[Path]:
        return [Path(self.out_dir) / f.name for f in self.artifacts if f.role == role]

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self))


@dataclass
class _Source:
    directory: Path
    manifest: Manifest


class _ToolFailed(Exception):
    """An onnxruntime tool exited with an error; the message has its last lines."""


def package_mobile(platform: str, tflite_variants: list[Path], onnx_variant: Path | None, out_dir: Path,
                   *, ort_batch: int | None = 1) -> MobilePackage:
    """Package a model's TFLite variants and ONNX variant for `platform` ("android" or "ios") into out_dir.

    What exists is packaged and what is missing is listed (with how to make it); only a call with nothing to package
    is refused. `ort_batch` fixes the ONNX batch dimension before conversion (None keeps it dynamic, which leaves
    NNAPI and Core ML nothing to run). Raises UserError for bad input, naming the folder and what to do.
    """
    if platform not in PLATFORMS:
        raise UserError(f"unknown mobile platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
    if ort_batch is not None and ort_batch < 1:
        raise UserError(f"ort_batch must be 1 or more (or None for a dynamic batch), got {ort_batch}")
    tflite = _unique([_read_source(Path(d), "tflite") for d in tflite_variants])
    onnx = _read_source(Path(onnx_variant), "onnx") if onnx_variant is not None else None
    sources = tflite + ([onnx] if onnx else [])
    if not sources:
        raise UserError(f"nothing to package for {platform}: no TFLite and no ONNX variant was given. Make them with "
                        "`edgemaas compress NAME` (tflite-int8, tflite-float16, onnx-float32) or bring a .tflite "
                        "or .onnx file")
    reference = _common_model(sources)
    name = reference.name
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        package = _build(platform, name, reference, tflite, onnx, staging, out_dir, ort_batch)
        _publish(staging, out_dir, package)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return package


def _build(platform: str, name: str, reference: Manifest, tflite: list[_Source], onnx: _Source | None,
           staging: Path, out_dir: Path, ort_batch: int | None) -> MobilePackage:
    package = MobilePackage(platform=platform, model=name, out_dir=str(out_dir))
    made: dict[str, tuple[str, str]] = {}  # file name -> (role, variant it was made from)
    model_sources: dict[str, _Source] = {}  # model file name -> its variant
    for source in tflite:
        file_name = tflite_file_name(name, source.manifest.variant)
        shutil.copyfile(source.directory / source.manifest.model.file, staging / file_name)
        made[file_name] = ("tflite", source.manifest.variant)
        model_sources[file_name] = source
    if onnx is not None:
        for file_name, role in _ort_side(name, onnx, staging, ort_batch, package, fatal=not tflite).items():
            made[file_name] = (role, onnx.manifest.variant)
            if role == "ort":
                model_sources[file_name] = onnx
    signatures = _signatures({f: staging / f for f in model_sources})
    models = {f: _file_entry(staging / f, made[f][0], source, signatures[f], ort_batch)
              for f, source in model_sources.items()}
    package.missing.extend(_missing(name, tflite, onnx, models))
    package.warnings.extend(f"{f} does not load with its saved runtime optimizations replayed ({e['replay_error']});"
                            " the metadata and snippets load it without them (the CPU then runs the graph as saved)"
                            for f, e in models.items() if e.get("replay_error"))
    metadata_name = f"{name}_metadata.json"
    _write_text(staging / metadata_name, json.dumps(_metadata(reference, models), indent=2) + "\n")
    made[metadata_name] = ("metadata", "")
    for file_name, model_file in _render_snippets(platform, reference, models, metadata_name, staging,
                                                  package).items():
        made[file_name] = ("snippet", models[model_file]["variant"])
    package.artifacts = [PackagedFile(name=f, role=role, size_bytes=(staging / f).stat().st_size,
                                      sha256=sha256_file(staging / f), variant=variant)
                         for f, (role, variant) in made.items()]
    package.files = [str(out_dir / f) for f in made]
    package.snippet_model = _primary_tflite(models) or ""
    return package


def tflite_file_name(name: str, variant: str) -> str:
    """`cnn` + `tflite-int8` -> `cnn_int8.tflite`; `tflite-clustered-int8` -> `cnn_clustered_int8.tflite`."""
    suffix = variant.removeprefix("tflite-").replace("-", "_") or "model"
    return f"{name}_{suffix}.tflite"


def class_name(name: str) -> str:
    """A Kotlin/Swift type name from a model name: `cnn` -> `Cnn`, `my-model_2` -> `MyModel2`."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    joined = "".join(p[0].upper() + p[1:] for p in parts) or "Model"
    return joined if joined[0].isalpha() else f"Model{joined}"


# ---------------------------------------------------------------------------------------------------------- input


def _read_source(directory: Path, expected: str) -> _Source:
    """A variant folder's manifest, checked: it exists, has the expected format, and its model matches its sha256."""
    role = "TFLite" if expected == "tflite" else "ONNX"
    if not directory.is_dir():
        raise UserError(f"{directory}: no such variant folder (expected a {role} variant with {MANIFEST_NAME}); "
                        "run `edgemaas compress NAME` first")
    try:
        manifest = read_manifest(directory)
        read_verified_model(directory, manifest)
    except ModelLoadError as exc:
        raise UserError(f"{directory}: {exc}; rebuild it with `edgemaas compress NAME --force`") from None
    if manifest.model.format != expected:
        other = "the ONNX variant" if manifest.model.format == "onnx" else "a TFLite variant"
        raise UserError(f"{directory}: holds a {manifest.model.format} model ({manifest.variant}), not {role}; "
                        f"pass it as {other}")
    return _Source(directory, manifest)


def _unique(sources: list[_Source]) -> list[_Source]:
    """The same variant given twice (the gate's choice is often tflite-int8 itself) is packaged once."""
    seen: dict[str, _Source] = {}
    for source in sources:
        seen.setdefault(source.manifest.variant, source)
    return list(seen.values())


def _common_model(sources: list[_Source]) -> Manifest:
    """All variants must be of one model: one name, one preprocessing, one postprocessing (the app gets one set)."""
    first = sources[0].manifest
    for source in sources[1:]:
        m = source.manifest
        if (m.name, m.preprocessing, m.postprocessing) != (first.name, first.preprocessing, first.postprocessing):
            raise UserError(f"{source.directory} ({m.name}, {m.variant}) is not a variant of the same model as "
                            f"{sources[0].directory} ({first.name}, {first.variant}): their names or pre/post-"
                            "processing differ; package each model on its own")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", first.name):
        raise UserError(f"model name {first.name!r} cannot name files; use letters, digits, '-', '_' and '.'")
    return first


# ------------------------------------------------------------------------------------------------------ ORT side


def _ort_side(name: str, onnx: _Source, staging: Path, ort_batch: int | None, package: MobilePackage,
              fatal: bool) -> dict[str, str]:
    """The .ort, its operator config and the usability report. A tool failure becomes a warning when TFLite files
    are packaged beside it, and a UserError when the ONNX side is all there is."""
    work = staging / "ort-work"
    work.mkdir()
    onnx_path = work / f"{name}.onnx"
    shutil.copyfile(onnx.directory / onnx.manifest.model.file, onnx_path)
    try:
        warnings = _fix_batch(onnx_path, onnx.manifest.inputs, ort_batch) if ort_batch is not None else []
        report = _run_tool("check_onnx_model_mobile_usability", [onnx_path.name], cwd=work)
        summary = parse_usability_report(report)
        _run_tool("convert_onnx_models_to_ort", ["--optimization_style", ORT_OPTIMIZATION_STYLE,
                                                 "--target_platform", ORT_TARGET_PLATFORM,
                                                 "--output_dir", "ort", onnx_path.name], cwd=work)
    except _ToolFailed as exc:
        if fatal:
            raise UserError(f"{onnx.directory}: {exc}; nothing else to package (no TFLite variant was given)") from None
        package.warnings.append(f"{exc}; the .ort side was not packaged, the .tflite files were")
        return {}
    summary.update(platform_eps=list(PLATFORM_EPS[package.platform]), onnxruntime=_ort_version(),
                   checked=f"{name}.ort's graph ({onnx.manifest.variant}, batch {ort_batch or 'dynamic'})")
    package.usability = summary
    package.warnings.extend(warnings + _npu_warnings(summary, package.platform, f"{name}.ort"))
    made = {f"{name}_mobile_usability.txt": "usability-report", f"{name}_mobile_usability.json": "usability-summary"}
    _write_text(staging / f"{name}_mobile_usability.txt", report)
    _write_text(staging / f"{name}_mobile_usability.json", json.dumps(summary, indent=2) + "\n")
    ort_file, config_file = _converter_outputs(work / "ort", name)
    os.replace(ort_file, staging / f"{name}.ort")
    config = _clean_config(config_file.read_text(), f"{name}.ort")
    _write_text(staging / f"{name}.required_operators.config", config)
    made[f"{name}.ort"] = "ort"
    made[f"{name}.required_operators.config"] = "ort-config"
    return made


_DYNAMIC_QUANT_OPS = {"ai.onnx:DynamicQuantizeLinear", "ai.onnx:MatMulInteger", "ai.onnx:ConvInteger"}


def _npu_warnings(summary: dict[str, Any], platform: str, ort_name: str) -> list[str]:
    """Say so when none of the platform's accelerator EPs would take the graph whole (onnxruntime's rating)."""
    eps = {ep: summary["execution_providers"][ep] for ep in PLATFORM_EPS[platform]}
    if any(info.get("suitability") == "YES" for info in eps.values()):
        return []
    parts = [f"{ep} would take {info['supported_nodes']}/{info['total_nodes']} nodes in {info['partitions']} "
             f"partition(s) (rated {info.get('suitability', '?')}"
             + (f"; unsupported: {', '.join(sorted(info['unsupported_ops']))})" if info["unsupported_ops"] else ")")
             for ep, info in eps.items()]
    advice = "; the CPU execution provider may well be faster"
    if any(_DYNAMIC_QUANT_OPS & set(info["unsupported_ops"]) for info in eps.values()):
        advice += (". Dynamic quantization's ops are what the accelerator lacks: a float32 or static-QDQ ONNX variant"
                   " (onnx-float32, onnx-qdq) suits it better")
    return [f"{ort_name}: " + "; ".join(parts) + advice]


def _fix_batch(onnx_path: Path, inputs: list[TensorSpec], batch: int) -> list[str]:
    """Fix each input's dynamic batch dimension (onnxruntime's make_dynamic_shape_fixed, in place); say which
    inputs keep other dynamic dimensions, which NNAPI and Core ML cannot take."""
    warnings = []
    for spec in inputs:
        if not spec.shape or spec.shape[0] != -1:
            continue
        if any(d < 1 for d in spec.shape[1:]):
            warnings.append(f"ONNX input {spec.name!r} has dynamic dimensions besides the batch ({spec.shape}); "
                            "NNAPI and Core ML cannot run nodes that depend on it. Fix them with `python -m "
                            "onnxruntime.tools.make_dynamic_shape_fixed` before packaging")
            continue
        shape = ",".join(str(d) for d in [batch, *spec.shape[1:]])
        _run_tool("make_dynamic_shape_fixed", ["--input_name", spec.name, "--input_shape", shape,
                                               onnx_path.name, onnx_path.name], cwd=onnx_path.parent)
    return warnings


def _run_tool(tool: str, args: list[str], cwd: Path) -> str:
    """Run `python -m onnxruntime.tools.<tool>` and return what it printed (stdout and stderr, as it printed them)."""
    command = [sys.executable, "-m", f"onnxruntime.tools.{tool}", *args]
    try:
        done = subprocess.run(command, check=False, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _ToolFailed(f"onnxruntime's {tool} did not finish in {TOOL_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = done.stdout.strip().splitlines()
        # A Python traceback's last exception line says what went wrong; otherwise show the tool's last lines.
        errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Fail)\w*: ", line)]
        reason = errors[-1] if errors else "\n".join(lines[-6:])
        hint = " (is onnxruntime installed? pip install onnxruntime)" if "No module named" in done.stdout else ""
        raise _ToolFailed(f"onnxruntime's {tool} failed (exit {done.returncode}){hint}: {reason}")
    return done.stdout


def _converter_outputs(folder: Path, name: str) -> tuple[Path, Path]:
    """convert_onnx_models_to_ort names its outputs `<stem>.with_runtime_opt.ort` and
    `<stem>.required_operators.with_runtime_opt.config` for the Runtime style (no infix for Fixed)."""
    ort_files, configs = sorted(folder.glob(f"{name}*.ort")), sorted(folder.glob(f"{name}*.config"))
    if len(ort_files) != 1 or len(configs) != 1:
        found = ", ".join(p.name for p in folder.iterdir()) if folder.is_dir() else "nothing"
        raise UserError(f"onnxruntime's convert_onnx_models_to_ort wrote {found}; expected one .ort and one "
                        ".config (has the tool's naming changed?)")
    return ort_files[0], configs[0]


def _clean_config(text: str, ort_name: str) -> str:
    """The config's header names the converter's temporary files; name the shipped .ort instead."""
    body = [line for line in text.splitlines() if not line.startswith("#")]
    header = [f"# Operators (domain;opset;ops) that {ort_name} needs: pass this file to onnxruntime's",
              f"# build.py --include_ops_by_config for a reduced-size mobile build ({ORT_OPTIMIZATION_STYLE} style)."]
    return "\n".join(header + body) + "\n"


_PARTITIONS = re.compile(r"(\d+) partitions with a total of (\d+)/(\d+) nodes can be handled by the (.+) EP\.")
_AS_IS = re.compile(r"Model should perform well with (.+) as is: (\w+)")
_FIXED = re.compile(r"Model should perform well with (.+) if modified to have fixed input shapes: (\w+)")


def parse_usability_report(text: str) -> dict[str, Any]:
    """Parse check_onnx_model_mobile_usability's log into, per execution provider: partitions, supported and total
    nodes, partition sizes, unsupported ops, the verdict as is, and the same with fixed shapes when it checked that."""
    eps: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for raw in text.splitlines():
        line = re.sub(r"^(INFO|WARNING|DEBUG):\s*", "", raw).strip()
        if line.startswith("Checking ") and line.removeprefix("Checking ") in USABILITY_EPS:
            current = eps.setdefault(line.removeprefix("Checking "), {})
            target = current
        elif current is None:
            continue
        elif line.startswith("Partition information if the model was updated to make the shapes fixed"):
            target = current.setdefault("with_fixed_shapes", {})
        elif m := _PARTITIONS.match(line):
            target.update(partitions=int(m[1]), supported_nodes=int(m[2]), total_nodes=int(m[3]))
        elif line.startswith("Partition sizes:"):
            target["partition_sizes"] = [int(s) for s in re.findall(r"\d+", line)]
        elif line.startswith("Unsupported ops:"):
            target["unsupported_ops"] = [op for op in line.removeprefix("Unsupported ops:").strip().split(",") if op]
        elif m := re.match(r"Unsupported nodes due to input having a dynamic shape=(\d+)", line):
            target["nodes_with_dynamic_input"] = int(m[1])
        elif m := _AS_IS.match(line):
            current["suitability"] = m[2]
        elif m := _FIXED.match(line):
            current.setdefault("with_fixed_shapes", {})["suitability"] = m[2]
    missing = [ep for ep in USABILITY_EPS if "partitions" not in eps.get(ep, {})]
    if missing:
        raise _ToolFailed("could not read onnxruntime's check_onnx_model_mobile_usability report (no partition "
                          f"line for {', '.join(missing)}; has its wording changed?)")
    for info in eps.values():
        for part in (info, info.get("with_fixed_shapes")):
            if part and "partitions" in part:
                part.setdefault("partition_sizes", [])
                part.setdefault("unsupported_ops", [])
    recommendation = [line for line in text.splitlines() if "recommended to compare" in line
                      or "should be used with the CPU EP" in line]
    return {"execution_providers": eps,
            "recommendation": re.sub(r"^INFO:\s*", "", recommendation[-1]).strip() if recommendation else ""}


def _ort_version() -> str:
    try:
        return importlib_metadata.version("onnxruntime")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------- model files, metadata


@dataclass
class _Signature:
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    replay_error: str = ""  # a .ort that loads only without its saved runtime optimizations: why


def _signatures_job(paths: dict[str, str]) -> dict[str, _Signature]:
    from edgemaas.runtime.backends import open_backend

    found = {}
    for file_name, path in paths.items():
        content = Path(path).read_bytes()
        fmt = "tflite" if path.endswith(".tflite") else "onnx"  # onnxruntime reads .ort bytes as it reads .onnx
        backend = open_backend(fmt, content)
        found[file_name] = _Signature([asdict(s) for s in backend.inputs], [asdict(s) for s in backend.outputs])
        if path.endswith(".ort"):
            found[file_name].replay_error = _replay_error(content)
    return found


def _replay_error(content: bytes) -> str:
    """Load a .ort as the snippets do, replaying its saved optimizations; onnxruntime 1.32 fails that on some QDQ
    graphs ("Not enough produced nodes in the runtime optimization record") that load fine without the replay."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    for key, value in ORT_SESSION_OPTIONS.items():
        options.add_session_config_entry(key, value)
    try:
        ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's exception types derive from Exception alone
        return str(exc).strip().splitlines()[0]
    return ""


def _signatures(paths: dict[str, Path]) -> dict[str, _Signature]:
    """Every packaged model's tensors, read by the interpreters that will run them, in a child process (a malformed
    file can crash an interpreter): the files are proven to load before anything is published."""
    if not paths:
        return {}
    try:
        return run_isolated(_signatures_job, {k: str(v) for k, v in paths.items()}, timeout=180)
    except StageFailed as exc:
        reason = str(exc).splitlines()[0].removeprefix("ModelLoadError: ")
        raise UserError(f"a packaged model does not load: {reason}") from None


def _tensor(spec: dict[str, Any]) -> dict[str, Any]:
    """A tensor as an app sees it: `shape` as the interpreter allocates it (a dynamic batch becomes 1),
    `shape_signature` with -1 where a dimension is dynamic, `key` its signature name when it has one."""
    tensor = {"name": spec["name"], "shape": [1 if d == -1 else d for d in spec["shape"]],
              "shape_signature": spec["shape"], "dtype": spec["dtype"], "scale": spec["scale"],
              "zero_point": spec["zero_point"]}
    if spec.get("key"):  # the TFLite signature's name ("mask"), which a several-output snippet returns it under
        tensor["key"] = spec["key"]
    return tensor


def _file_entry(path: Path, role: str, source: _Source, signature: _Signature, ort_batch: int | None) -> dict:
    m = source.manifest
    entry: dict[str, Any] = {
        "format": "tflite" if role == "tflite" else "ort", "variant": m.variant, "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path), "inputs": [_tensor(s) for s in signature.inputs],
        "outputs": [_tensor(s) for s in signature.outputs], "held_out": m.metrics.get("held_out", {}),
    }
    if role == "tflite":
        entry["full_int8"] = _full_int8(entry)
    else:
        entry.update(converted_from={"file": m.model.file, "sha256": m.model.sha256},
                     optimization_style=ORT_OPTIMIZATION_STYLE,
                     session_options={} if signature.replay_error else ORT_SESSION_OPTIONS,
                     fixed_batch=ort_batch, onnxruntime=_ort_version())
        if signature.replay_error:
            entry["replay_error"] = signature.replay_error
    return entry


def _full_int8(entry: dict[str, Any]) -> bool:
    """Integer tensors in and out (token ids stay int32): what NPU delegates want."""
    return (all(t["dtype"] != "float32" for t in entry["inputs"])
            and all(t["dtype"] in ("int8", "uint8") and t["scale"] for t in entry["outputs"]))


def _primary_tflite(models: dict[str, dict]) -> str | None:
    """The .tflite the LiteRT snippet loads: tflite-int8, else another full-int8 file, else the first."""
    tflite = [f for f, e in models.items() if e["format"] == "tflite"]
    for test in (lambda f: models[f]["variant"] == "tflite-int8", lambda f: models[f]["full_int8"], lambda f: True):
        chosen = [f for f in tflite if test(f)]
        if chosen:
            return chosen[0]
    return None


def _missing(name: str, tflite: list[_Source], onnx: _Source | None, models: dict[str, dict]) -> list[str]:
    """What a phone app would want and this package lacks, each with how to get it."""
    brought = any(s.manifest.variant.endswith("-imported") for s in [*tflite, *([onnx] if onnx else [])])
    compress = f"`edgemaas compress {name}`"
    requantize = ("a .tflite you bring cannot be re-quantized: bring the Keras model or SavedModel and run "
                  "`edgemaas compress MODEL --calibration-data x.npy`") if brought else \
        f"add it to compress.variants in the spec and run {compress}"
    notes = []
    if not tflite:
        notes.append("no TFLite variant: no .tflite files and no LiteRT snippet. " + (
            "A model brought as .onnx cannot become TFLite: bring the Keras model and run `edgemaas compress MODEL`"
            if brought else f"Make tflite-int8 and tflite-float16 with {compress}"))
    elif not any(e["full_int8"] for e in models.values() if e["format"] == "tflite"):
        notes.append(f"no full-int8 TFLite (tflite-int8), which NPU delegates (NNAPI, Core ML, vendor NPUs) want: "
                     f"{requantize}")
    if tflite and not any(s.manifest.variant == "tflite-float16" for s in tflite):
        notes.append(f"no float16 TFLite (tflite-float16), the GPU delegate's natural input: {requantize}")
    if onnx is None:
        notes.append("no ONNX variant: no .ort, operator config or NNAPI/Core ML usability report. " + (
            "`edgemaas compress MODEL.tflite` makes ONNX variants from a .tflite (tf2onnx); package the build it makes"
            if brought else f"Make onnx-float32 with {compress}, or bring a .onnx"))
    return notes


def _metadata(reference: Manifest, models: dict[str, dict]) -> dict[str, Any]:
    """What the app needs beside the model files, one record for every file in the package."""
    preprocessing = []
    for step in reference.preprocessing:
        step = dict(step)
        if step["kind"] == "text":
            step.setdefault("lowercase", True)
            step["tokenizer"] = {"pattern": TOKEN_PATTERN.pattern, "pad_id": PAD_ID, "oov_id": OOV_ID,
                                 "rule": "lowercase if asked, take the pattern's matches in order, map each to its "
                                         "vocabulary index (oov_id if absent), truncate or right-pad with pad_id "
                                         "to max_length"}
        preprocessing.append(step)
    return {"schema": "edgemaas.mobile-metadata/1", "model": reference.name, "task": reference.task,
            "preprocessing": preprocessing, "postprocessing": reference.postprocessing, "files": models}


# ------------------------------------------------------------------------------------------------------ snippets


def _render_snippets(platform: str, reference: Manifest, models: dict[str, dict], metadata_name: str,
                     staging: Path, package: MobilePackage) -> dict[str, str]:
    """Render the LiteRT snippet (for the primary .tflite) and the onnxruntime one (for the .ort); returns
    snippet file name -> the model file it runs."""
    cls = class_name(reference.name)
    written: dict[str, str] = {}
    primary = _primary_tflite(models)
    ort = next((f for f, e in models.items() if e["format"] == "ort"), None)
    for (template, pattern), model_file in zip(_SNIPPETS[platform], (primary, ort)):
        if model_file is None:
            continue
        context, problem = _snippet_context(reference, model_file, models[model_file], metadata_name)
        if problem:
            package.warnings.append(f"no {pattern.format(cls=cls)}: {problem}")
            continue
        file_name = pattern.format(cls=cls)
        text = render(f"mobile/{template}", cls=cls + ("Ort" if model_file == ort else ""), **context)
        _write_text(staging / file_name, text)
        written[file_name] = model_file
    return written


def _snippet_context(reference: Manifest, model_file: str, entry: dict, metadata_name: str) -> tuple[dict, str]:
    """The values a snippet template needs, or a reason the model's tensors are beyond what snippets handle."""
    post = reference.postprocessing
    if len(reference.preprocessing) != len(entry["inputs"]):
        names = ", ".join(t["name"] for t in entry["inputs"])
        return {}, (f"the model takes named tensors ({names}) rather than a batch of samples; the snippets fill "
                    "fixed-shape samples (the manifest's inputs/outputs list every tensor)")
    open_shapes = [t["name"] for t in entry["inputs"] + entry["outputs"]
                   if any(int(d) < 0 for d in t.get("shape_signature", t["shape"])[1:])]  # the batch runs at 1
    if open_shapes:
        return {}, (f"{', '.join(open_shapes)} have dynamic dimensions; the snippets fill and read tensors of a "
                    "fixed size")
    inputs = []
    for index, (step, tensor) in enumerate(zip(reference.preprocessing, entry["inputs"])):
        count = int(np.prod(tensor["shape"]))
        field_name = step.get("input", f"input{index}")
        item = {**tensor, "index": index, "field": field_name, "param": _parameter(field_name, index),
                "kind": step["kind"],
                "count": count, "bytes": count * _ITEM_BYTES.get(tensor["dtype"], 0),
                "quantized": bool(tensor["scale"]) and tensor["dtype"] in ("int8", "uint8", "int16")}
        if tensor["dtype"] not in _ITEM_BYTES:
            return {}, f"input {tensor['name']} is {tensor['dtype']}, which the snippets do not fill"
        if step["kind"] == "text":
            if count != int(step["max_length"]) or tensor["dtype"] not in ("int32", "int64"):
                return {}, (f"text input {tensor['name']} is {tensor['dtype']} {tensor['shape']}; the snippets expect "
                            f"int32/int64 token ids of length {step['max_length']}")
            item.update(max_length=int(step["max_length"]), lowercase=bool(step.get("lowercase", True)))
        else:
            if tensor["dtype"] not in ("float32", "int8", "uint8", "int16"):
                return {}, (f"input {tensor['name']} is {tensor['dtype']} with no text vocabulary; the snippets fill "
                            "float and quantized inputs, and token ids from a vocabulary")
            sample = [int(d) for d in step["shape"]]
            item.update(sample_shape=sample, mean=_broadcastable(step.get("mean", 0.0), sample),
                        std=_broadcastable(step.get("std", 1.0), sample))
        inputs.append(item)
    outputs = []
    for index, tensor in enumerate(entry["outputs"]):
        count = int(np.prod(tensor["shape"]))
        if tensor["dtype"] not in ("float32", "int8", "uint8", "int16"):
            return {}, f"output {tensor['name']} is {tensor['dtype']}, which the snippets do not read"
        outputs.append({**tensor, "index": index, "count": count, "bytes": count * _ITEM_BYTES[tensor["dtype"]],
                        "quantized": bool(tensor["scale"]) and tensor["dtype"] in ("int8", "uint8", "int16")})
    if post.get("kind") == "classification" and len(post["labels"]) != outputs[0]["count"]:
        return {}, f"{len(post['labels'])} labels for an output of {outputs[0]['count']} values"
    context = {
        "model": reference.name, "model_file": model_file, "model_stem": model_file.rsplit(".", 1)[0],
        "model_ext": model_file.rsplit(".", 1)[1], "metadata_file": metadata_name,
        "metadata_stem": metadata_name.rsplit(".", 1)[0], "variant": entry["variant"], "sha256": entry["sha256"],
        "inputs": inputs, "outputs": outputs, "post_kind": post.get("kind", "raw"),
        "labels": [str(label) for label in post.get("labels", [])],
        "names": [str(n) for n in post.get("names", ["value"])],
        "out_mean": _flat(post.get("mean", 0.0)), "out_std": _flat(post.get("std", 1.0)),
        "has_text": any(i["kind"] == "text" for i in inputs), "token_pattern": TOKEN_PATTERN.pattern,
        "pad_id": PAD_ID, "oov_id": OOV_ID, "session_options": entry.get("session_options", {}),
        "ort_version": _ort_version(), "held_out": entry.get("held_out", {}),
    }
    return context, ""


# Words Kotlin or Swift reserve, which a parameter named after an input cannot be.
_RESERVED = {"as", "break", "class", "continue", "do", "else", "false", "for", "fun", "if", "in", "interface", "is",
             "null", "object", "package", "return", "super", "this", "throw", "true", "try", "typealias", "typeof",
             "val", "var", "when", "while", "let", "func", "struct", "enum", "protocol", "import", "init", "self",
             "Self", "static", "switch", "case", "default", "where", "guard", "repeat", "inout", "operator", "nil",
             "values", "inputs", "outputs", "output", "output0", "raw", "result", "results", "feeds", "data"}


def _parameter(field_name: str, index: int) -> str:
    """A Kotlin/Swift parameter name from an input's name: `image` stays, `my input` -> `myInput`."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", field_name) if p]
    name = (parts[0][0].lower() + parts[0][1:] + "".join(p[0].upper() + p[1:] for p in parts[1:])) if parts else ""
    if not name or not name[0].isalpha():
        name = f"input{index}{name}"
    return f"{name}Input" if name in _RESERVED else name


def _flat(value: Any) -> list[float]:
    return [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]


def _broadcastable(value: Any, sample_shape: list[int]) -> list[float]:
    """Normalisation constants flattened so that element k of a row-major sample uses entry k % len: exact when the
    constant's shape is a trailing part of the sample's (a scalar, per feature, per channel); otherwise spelled out
    for every element."""
    array = np.asarray(value, dtype=np.float64)
    shape = list(array.shape)
    while shape and shape[0] == 1:
        shape.pop(0)
    if not shape or shape == sample_shape[len(sample_shape) - len(shape):]:
        return [float(v) for v in array.reshape(-1)]
    return [float(v) for v in np.broadcast_to(array, sample_shape).reshape(-1)]


def kotlin_string(value: str) -> str:
    """A Kotlin string literal (`$` escaped: it starts a template)."""
    escaped = json.dumps(str(value), ensure_ascii=True)[1:-1].replace("$", "\\$")
    return f'"{escaped}"'


def swift_string(value: str) -> str:
    """A Swift string literal (Swift spells a code point `\\u{XXXX}`, not `\\uXXXX`)."""
    out = []
    for ch in str(value):
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):X}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _float32_text(value: float) -> str:
    """The shortest decimal that reads back as the same float32 (what the interpreter holds)."""
    f = np.float32(value)
    if not np.isfinite(f):
        raise UserError(f"a normalisation or quantization constant is {value!r}; the model's manifest is broken")
    return np.format_float_positional(f, unique=True, trim="0")


def _kotlin_float(value: float) -> str:
    return _float32_text(value) + "f"


def _swift_float(value: float) -> str:
    return _float32_text(value)


# ------------------------------------------------------------------------------------------------------- publish


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text, fsync=False)  # into the staging folder; _publish makes it visible


def _publish(staging: Path, out_dir: Path, package: MobilePackage) -> None:
    """Move every staged file into out_dir, drop files a previous package made that this one does not, then write
    the record last (a reader that finds mobile.json finds every file it lists)."""
    previous: set[str] = set()
    try:
        previous = {f["name"] for f in json.loads((out_dir / RECORD_NAME).read_text())["artifacts"]}
    except (FileNotFoundError, KeyError, TypeError, json.JSONDecodeError):
        pass
    for f in package.artifacts:
        os.replace(staging / f.name, out_dir / f.name)
    for stale in previous - {f.name for f in package.artifacts}:
        if "/" not in stale and stale != RECORD_NAME:
            (out_dir / stale).unlink(missing_ok=True)
    package.save(out_dir / RECORD_NAME)


register_filters(kstr=kotlin_string, sstr=swift_string, kfloat=_kotlin_float, sfloat=_swift_float)
