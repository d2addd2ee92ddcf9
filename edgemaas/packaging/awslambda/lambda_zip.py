"""AWS Lambda zip packages: handler + runtime + model + manifest + the inference runtime's wheels.

The zip is deterministic (sorted entries, fixed timestamps and modes), so the same inputs give the same bytes and
the same sha256, which is what lets a deploy skip unchanged code.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator

from edgemaas.errors import StageFailed, UserError
from edgemaas.fsutil import atomic_dir, atomic_write_json
from edgemaas.resources import handler_file
from edgemaas.isolate import run_isolated
from edgemaas.runtime import MANIFEST_NAME, load_model, read_manifest
from edgemaas.runtime.manifest import Manifest, sha256_file
from edgemaas.compress.records import load_selection
from edgemaas.packaging.common import dependencies
from edgemaas.packaging.common.glibc import check_files
from edgemaas.packaging.common.matrix import ELF_MACHINE, LAMBDA_OS, LAMBDA_PYTHONS, RuntimePlan, plan
from edgemaas.packaging.awslambda.loadcheck import LoadCheck, check_with_runtime, op_version_problem
from edgemaas.packaging.awslambda.bytecode import compile_bytecode, target_python
from edgemaas.secret_scan import check_no_secrets
from edgemaas.packaging.common.archives import write_deterministic_zip
from edgemaas.packaging.common.inputs import (
    SKIP_DIRS,
    SKIP_SUFFIXES,
    file_intact,
    input_hash,
    previous_record,
    tree,
)
# Module globals, read at call time (tests lower UNZIPPED_LIMIT): Lambda's limits live in aws/names (no boto3).
from edgemaas.aws.names import DIRECT_UPLOAD_LIMIT, HANDLER, IMAGE_LIMIT, MB, UNZIPPED_LIMIT

RUNTIME_PACKAGE_INIT = '"""edgemaas runtime, as shipped inside a package."""\n'
LAYOUTS = ("auto", "zip", "layer", "image")
# dist-info keeps what licences and metadata need; RECORD and installer bookkeeping go.
_DIST_INFO_KEEP = ("METADATA", "WHEEL", "LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS", "top_level.txt")
# Parts of ai-edge-litert the Interpreter API never loads: the WebGPU accelerator, the CompiledModel library, the
# vendor SDK shims, the AOT compiler and model tools. (Proven by every local invoke, which imports the slim package.)
_RUNTIME_EXTRAS = ("ai_edge_litert/libLiteRtWebGpuAccelerator.so", "ai_edge_litert/libLiteRt.so",
                   "ai_edge_litert/vendors/", "ai_edge_litert/aot/", "ai_edge_litert/tools/")


@dataclass
class LambdaPackage:
    zip_path: str
    zipped_bytes: int
    unzipped_bytes: int
    sha256: str
    handler: str
    python_version: str
    arch: str
    model: str
    variant: str
    model_format: str
    requirements: list[str]
    layout: str = "zip"
    layer: dict | None = None  # name, zip_path, sha256, zipped_bytes, unzipped_bytes (layout "layer")
    image_context: str | None = None  # the build context folder (layout "image")
    input_hash: str = ""  # of everything that went in: a package with the same inputs is reused
    reused: bool = False
    layout_reason: str = ""
    memory_mb: int = 512
    timeout_s: int = 30
    model_sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    runtime_choice: dict | None = None  # with --runtime auto: the measured choice, as recorded in the manifest
    runtime_why: str = ""  # why these wheels for this Lambda runtime (edgemaas.packaging.common.matrix)
    glibc: dict | None = None  # GlibcCheck.to_dict(): the package's ELF files against the runtime's glibc
    load_check: dict | None = None  # LoadCheck.to_dict(): the model run with the shipped runtime release
    fallback: str = ""  # why another format than the one asked for ships, when it does

    def save(self, path: Path) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "reused"}
        atomic_write_json(path, data)


def default_python_version() -> str:
    """The running Python when Lambda has it as a runtime (so a local invoke runs the bytes that deploy), else the
    newest Lambda runtime."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    return running if running in LAMBDA_PYTHONS else LAMBDA_PYTHONS[-1]


def layer_name(model_format: str, python_version: str, arch: str) -> str:
    runtime = "litert" if model_format == "tflite" else "onnxruntime"
    return f"edgemaas-{runtime}-py{python_version.replace('.', '')}-{arch}"


def package_lambda(variant_dir: Path, out_dir: Path, cache: Path, python_version: str | None = None,
                   arch: str = "x86_64", layout: str = "zip", layers_dir: Path | None = None,
                   memory_mb: int = 512, timeout_s: int = 30, fallback_reason: str = "") -> LambdaPackage:
    """Package the model variant in variant_dir for AWS Lambda, as `layout`:

    - zip: out_dir/function.zip with handler, runtime, model and the inference runtime's wheels;
    - layer: out_dir/function.zip without the wheels, which go to a shared layer zip (python/...) in layers_dir;
    - image: out_dir/../lambda-image/, a container build context on the AWS Lambda Python base image;
    - auto: the first of zip, layer, image that fits Lambda's limits, saying why.
    A package whose inputs did not change is reused, not rebuilt.

    The wheels are the ones `matrix.plan` picks for the Lambda runtime (their ELF files are checked against its
    glibc); the model is loaded with that runtime release first. When the runtime has no wheel for the model's
    format, or cannot load the model, the sibling variant of the other format ships instead, and the package says so.
    """
    fallback = fallback_reason  # set when this call packages the alternative of another variant
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    python_version = python_version or default_python_version()
    if python_version not in LAMBDA_OS:
        raise UserError(f"Lambda has no python{python_version} runtime; give --python-version "
                        f"{' | '.join(LAMBDA_PYTHONS)}")
    manifest = read_manifest(variant_dir)
    runtime_plan = plan(python_version, arch, manifest.model.format)
    if runtime_plan.ships != manifest.model.format:
        variant_dir, manifest, fallback = _planned_alternative(variant_dir, runtime_plan)
    requirements = list(runtime_plan.requirements)
    deps = dependencies.install(requirements, python_version, arch, cache)
    code = dict(_code_files())
    code[f"model/{manifest.model.file}"] = variant_dir / manifest.model.file
    code[f"model/{MANIFEST_NAME}"] = variant_dir / MANIFEST_NAME
    runtime_files = dict(slim(tree(deps, "")))
    check_no_secrets(code)  # ours and the user's files, by name and content
    check_no_secrets(runtime_files, scan_contents=False)  # published wheels: names only
    glibc = check_files(((n, p) for n, p in runtime_files.items() if isinstance(p, Path)), runtime_plan.os.glibc,
                        f"Lambda's python{python_version} {arch} runtime ({runtime_plan.os.name})")
    if not glibc.ok:
        raise UserError(f"{glibc.problem()}. {runtime_plan.why}")
    if glibc.machines and glibc.machines != [ELF_MACHINE[arch]]:
        raise UserError(f"the wheels for {arch} hold ELF files for {', '.join(glibc.machines)}")
    warnings: list[str] = []
    python = target_python(python_version)
    if python is None:
        warnings.append(f"no Python {python_version} here to precompile bytecode: the function will compile every "
                        "module at each cold start (about 120 ms more for numpy); install python"
                        f"{python_version} and package again")
    else:
        code.update(compile_bytecode(code, python))
        runtime_files.update(_runtime_bytecode(runtime_files, deps, python, cache))
    code_bytes, runtime_bytes = _unzipped(code), _unzipped(runtime_files)
    reason = ""
    if layout == "auto":
        layout, reason = choose_layout(code_bytes, runtime_bytes, _estimate_zipped(code, runtime_files))
    elif code_bytes + runtime_bytes > UNZIPPED_LIMIT and layout in ("zip", "layer"):
        raise UserError(f"the package unzips to {(code_bytes + runtime_bytes) / MB:.0f} MB; Lambda allows "
                        f"{UNZIPPED_LIMIT // MB} MB including layers. Ship a smaller variant (--variant "
                        "tflite-int8) or a container image (--layout image).")

    runtime_hash = input_hash(runtime_files)  # hashed once: the wheels are most of the bytes
    inputs = input_hash(code, runtime_hash, layout, python_version, arch, memory_mb, timeout_s, fallback)
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / "package.json"
    previous = previous_record(record_path, LambdaPackage, inputs, lambda record: _intact(record, out_dir))
    if previous is not None:
        return previous

    try:
        check_loadable(variant_dir)
    except UserError as exc:
        if not op_version_problem(str(exc)):  # an op too new for the runtimes: the fallback below may serve it
            raise
    load = check_with_runtime(variant_dir, requirements, python_version, arch, cache, shipped=runtime_files)
    if not load.ok and load.failed_at == "request":  # it loads: another format would not fix the request's sizes
        raise UserError(f"{variant_dir.name} loads with {', '.join(requirements)} (Lambda python{python_version} "
                        f"{arch}), but {load.error}. Give the real input sizes (--input-shape NAME=D1,D2,...) or a "
                        "real example (--example-input FILE.npz) and package again")
    if not load.ok:
        if fallback:
            raise UserError(f"{fallback}; and {variant_dir.name} cannot load either: "
                            f"{load.op_problem() or load.error}")
        alternative, why = _loadable_alternative(variant_dir, manifest.model.format, load, requirements,
                                                 python_version)
        return package_lambda(alternative, out_dir, cache, python_version, arch, layout if not reason else "auto",
                              layers_dir, memory_mb, timeout_s, fallback_reason=why)
    common = dict(handler=HANDLER, python_version=python_version, arch=arch, model=manifest.name,
                  variant=manifest.variant, model_format=manifest.model.format, requirements=requirements,
                  layout=layout, input_hash=inputs, layout_reason=reason, memory_mb=memory_mb,
                  timeout_s=timeout_s, model_sha256=manifest.model.sha256,
                  warnings=warnings + ([fallback] if fallback else []), runtime_why=runtime_plan.why,
                  glibc=glibc.to_dict(), load_check=load.to_dict(), fallback=fallback)
    if layout == "image":
        from edgemaas.packaging.awslambda.image import write_image_context

        context = write_image_context(out_dir.parent / "lambda-image", code, requirements, python_version, arch)
        package = LambdaPackage(zip_path="", zipped_bytes=0, unzipped_bytes=code_bytes + runtime_bytes, sha256="",
                                image_context=str(context), **common)
    else:
        zip_path = out_dir / "function.zip"
        files = code if layout == "layer" else {**code, **runtime_files}
        write_deterministic_zip(zip_path, files)
        layer = _layer(runtime_files, runtime_hash, layers_dir or out_dir.parent.parent / "layers",
                       layer_name(manifest.model.format, python_version, arch), requirements) \
            if layout == "layer" else None
        package = LambdaPackage(zip_path=str(zip_path), zipped_bytes=zip_path.stat().st_size,
                                unzipped_bytes=_unzipped(files), sha256=sha256_file(zip_path), layer=layer, **common)
        if package.zipped_bytes > DIRECT_UPLOAD_LIMIT:
            package.warnings.append(f"the zip is {package.zipped_bytes / MB:.0f} MB; Lambda takes at most "
                                    f"{DIRECT_UPLOAD_LIMIT // MB} MB directly: upload it through S3 (deploy "
                                    "--s3-bucket), or use --layout layer")
    package.save(record_path)
    if package.zip_path:
        from edgemaas.packaging.awslambda.serverless import link_artifacts

        link_artifacts([asdict(package)])  # <name>.zip beside function.zip: Serverless v3 keys S3 by file name
    return package


def _runtime_bytecode(runtime_files: dict[str, Path | bytes], deps: Path, python: str,
                      cache: Path) -> dict[str, Path | bytes]:
    """The wheels' bytecode, compiled once per installed set of wheels and target Python, and cached."""
    folder = cache / "lambda-bytecode" / f"{deps.name}-{hashlib.sha256(python.encode()).hexdigest()[:8]}"
    if not (folder / ".complete").exists():
        compiled = compile_bytecode(runtime_files, python)
        with atomic_dir(folder) as tmp:
            for name, data in compiled.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
            (tmp / ".complete").write_text("")
    return {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*.pyc"))}


def choose_layout(code_bytes: int, runtime_bytes: int, zipped_bytes: int) -> tuple[str, str]:
    """The simplest layout that fits Lambda's limits, and why."""
    total = code_bytes + runtime_bytes
    if total <= UNZIPPED_LIMIT and zipped_bytes <= DIRECT_UPLOAD_LIMIT:
        return "zip", (f"zip: {total / MB:.0f} MB unzipped and about {zipped_bytes / MB:.0f} MB zipped fit Lambda's "
                       f"{UNZIPPED_LIMIT // MB} MB and {DIRECT_UPLOAD_LIMIT // MB} MB direct-upload limits")
    if total <= UNZIPPED_LIMIT:
        return "layer", (f"layer: about {zipped_bytes / MB:.0f} MB zipped is over the {DIRECT_UPLOAD_LIMIT // MB} MB "
                         "direct upload, so the runtime goes to a shared layer and the function zip stays small")
    if total <= IMAGE_LIMIT:
        return "image", (f"image: {total / MB:.0f} MB unzipped is over Lambda's {UNZIPPED_LIMIT // MB} MB for code "
                         "and layers; a container image takes up to 10 GB")
    raise UserError(f"the package is {total / MB:.0f} MB, over even the 10 GB container image limit; "
                    "ship a smaller variant")


def _estimate_zipped(code: dict[str, Path | bytes], runtime: dict[str, Path | bytes]) -> int:
    """Zipped size without writing the zip: compress each file (cheap next to pip, and exact enough for a limit)."""
    import zlib

    total = 0
    for source in [*code.values(), *runtime.values()]:
        data = source.read_bytes() if isinstance(source, Path) else source
        total += len(zlib.compress(data, 6)) + 100
    return total


def slim(files: Iterator[tuple[str, Path]]) -> Iterator[tuple[str, Path]]:
    """Drop what serving never reads: tests, stubs, bytecode, installer records, unused runtime libraries.
    Shared objects are never stripped (numpy.libs breaks if they are)."""
    for name, path in files:
        parts = name.split("/")
        if SKIP_DIRS & set(parts[:-1]) or name.endswith(SKIP_SUFFIXES):
            continue
        if any(name == extra or (extra.endswith("/") and name.startswith(extra)) for extra in _RUNTIME_EXTRAS):
            continue
        if len(parts) > 1 and parts[0].endswith(".dist-info"):
            if not (parts[1].startswith(_DIST_INFO_KEEP) or parts[1] in ("licenses", "LICENSES")):
                continue
        yield name, path


def _layer(runtime_files: dict[str, Path | bytes], digest: str, layers_dir: Path, name: str,
           requirements: list[str]) -> dict:
    """The shared runtime layer (python/... as Lambda mounts it at /opt/python), rebuilt only when it changes."""
    layers_dir.mkdir(parents=True, exist_ok=True)
    zip_path = layers_dir / f"{name}.zip"
    record = layers_dir / f"{name}.json"
    files = {f"python/{k}": v for k, v in runtime_files.items()}
    try:
        known = json.loads(record.read_text())
        if known["input_hash"] == digest and zip_path.exists() and sha256_file(zip_path) == known["sha256"]:
            return known
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        pass
    write_deterministic_zip(zip_path, files)
    known = {"name": name, "zip_path": str(zip_path), "sha256": sha256_file(zip_path),
             "zipped_bytes": zip_path.stat().st_size, "unzipped_bytes": _unzipped(files),
             "requirements": requirements, "input_hash": digest}
    atomic_write_json(record, known)
    return known


def _unzipped(files: dict[str, Path | bytes]) -> int:
    return sum(source.stat().st_size if isinstance(source, Path) else len(source) for source in files.values())


def _intact(package: LambdaPackage, out_dir: Path) -> bool:
    """The recorded package's files are still there, unchanged, and this folder's (a copied workspace's record names
    the original's zip: reusing it would report, and deploy, another folder's file)."""
    if package.layout in ("zip", "layer") and not (
            file_intact(package.zip_path, package.sha256)
            and Path(package.zip_path).resolve() == (out_dir / "function.zip").resolve()):
        return False
    if package.layer and not file_intact(package.layer["zip_path"], package.layer["sha256"]):
        return False
    return not package.image_context or (Path(package.image_context) / "Dockerfile").exists()


def _describe_model(variant_dir: str) -> dict:
    return load_model(variant_dir).describe()


def check_loadable(variant_dir: Path) -> dict:
    """Refuse at package time what the runtime could not serve. In a child process: a malformed model file can
    crash an interpreter, and the loader's reason is what the user needs to read."""
    try:
        return run_isolated(_describe_model, str(variant_dir), timeout=120)
    except StageFailed as exc:
        reason = str(exc).splitlines()[0].removeprefix("ModelLoadError: ")
        raise UserError(f"{variant_dir}: the runtime cannot load this model: {reason}") from None


def _code_files() -> Iterator[tuple[str, Path | bytes]]:
    """The handler as handler.py, and edgemaas/runtime/ verbatim under an import-light edgemaas/__init__.py."""
    yield "handler.py", handler_file()
    yield "edgemaas/__init__.py", RUNTIME_PACKAGE_INIT.encode()
    runtime_dir = Path(str(resources.files("edgemaas.runtime")))
    yield from tree(runtime_dir, "edgemaas/runtime/")


def _other(model_format: str) -> str:
    return "onnx" if model_format == "tflite" else "tflite"


def alternative_variant(variant_dir: Path, model_format: str) -> Path | None:
    """The sibling variant of `model_format` to ship instead: the gate's choice for that format, else its float32."""
    root = variant_dir.parent
    selection = load_selection(root / "selection.json")
    names = [selection.chosen.get(model_format)] if selection else []
    names += [f"{model_format}-float32", *sorted(p.name for p in root.glob(f"{model_format}-*"))]
    for name in names:
        if name and (root / name / MANIFEST_NAME).exists() and \
                read_manifest(root / name).model.format == model_format:
            return root / name
    return None


def _planned_alternative(variant_dir: Path, runtime_plan: RuntimePlan) -> tuple[Path, Manifest, str]:
    """The variant of the format the runtime plan ships, when the model's own format has no runtime there."""
    target = f"Lambda python{runtime_plan.python} {runtime_plan.arch}"
    found = alternative_variant(variant_dir, runtime_plan.ships) if runtime_plan.ships else None
    if found is None:
        other = _other(runtime_plan.wanted)
        raise UserError(f"{variant_dir.name} cannot ship to {target}: {runtime_plan.why}. "
                        + (f"No {other} variant was built beside it to ship instead; " if runtime_plan.ships else "")
                        + "package with --python-version 3.12 or later (Amazon Linux 2023) or --arch x86_64")
    note = (f"{variant_dir.name} not shipped: {runtime_plan.why.split('; ships')[0]}; shipping {found.name} "
            f"({', '.join(runtime_plan.requirements)}) instead")
    return found, read_manifest(found), note


def _loadable_alternative(variant_dir: Path, model_format: str, load: LoadCheck, requirements: list[str],
                          python_version: str) -> tuple[Path, str]:
    """The other format's variant when the shipped runtime release cannot load this one; refuse when none."""
    runtime = next((r for r in requirements if not r.startswith("numpy")), requirements[-1])
    problem = load.op_problem()
    reason = (f"{runtime} cannot load {variant_dir.name}" +
              (f": it does not know {problem}" if problem else f": {load.error}"))
    found = alternative_variant(variant_dir, _other(model_format))
    if found is None:
        older_os = LAMBDA_OS[python_version] is not LAMBDA_OS[LAMBDA_PYTHONS[-1]]
        newer = "package for Python 3.12 or later (a newer runtime) or " if older_os else ""
        raise UserError(f"{reason}. No {_other(model_format)} variant was built beside it to fall back to; "
                        f"{newer}convert the model for older op versions")
    return found, f"{reason}; shipping {found.name} instead"
