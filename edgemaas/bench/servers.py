"""What gets measured for each model, and how each server's clean process is set up.

Per model: TensorFlow (the Keras float model with tf-keras, what users deploy today), the LiteRT and ONNX Runtime
variants served by our Lambda handler, and the packaged handler itself (the gate's choice in a real `layout zip`
package, extracted, seeing only that folder). Shared by all models: the floor of each runtime, numpy and the runtime
alone invoking an identity model.

The variant servers run the handler and runtime code of an extracted package of their format, pointed at the
variant's folder (EDGEMAAS_MODEL_DIR), so they import exactly what a package of that variant would. The floors import
numpy and the runtime from the same wheels, as pip installed them.
"""

from __future__ import annotations

import compileall
import importlib.util
import platform
import py_compile
import shutil
import sysconfig
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from edgemaas.errors import UserError
from edgemaas.local.unzip import extract_zip
from edgemaas.packaging.common import dependencies
from edgemaas.packaging.awslambda.lambda_zip import default_python_version, package_lambda
from edgemaas.pipeline import chosen_variant, smoke_event
from edgemaas.runtime import Manifest, read_manifest
from edgemaas.runtime.processing import InputProcessor
from edgemaas.workspace import FLOAT_VARIANT, Workspace
from edgemaas.bench.identity import SHAPE, identity_model
from edgemaas.bench.results import ServerResult

# (server id, label, variant) in table order: the servers.
VARIANT_SERVERS = (
    ("litert-float32", "LiteRT float32", "tflite-float32"),
    ("litert-dynamic", "LiteRT dynamic int8", "tflite-dynamic"),
    ("litert-int8", "LiteRT full int8", "tflite-int8"),
    ("ort-float32", "ORT float32", "onnx-float32"),
    ("ort-dynamic", "ORT dynamic int8", "onnx-dynamic"),
    ("ort-qdq", "ORT static QDQ int8", "onnx-qdq"),
)
RUNTIME_DIST = {"tflite": "ai-edge-litert", "onnx": "onnxruntime"}
FLOORS = {"tflite": ("floor-litert", "floor: numpy + LiteRT, identity"),
          "onnx": ("floor-ort", "floor: numpy + ORT, identity")}
TENSORFLOW_DISTS = ("tensorflow", "tensorflow-cpu", "tf-keras", "tf_keras")

Report = Callable[[str], None]


@dataclass
class Server:
    """One server to start in fresh processes: the worker's config and what is known before it runs."""

    model: str | None
    server: str
    label: str
    kind: str  # handler | keras | floor (worker.py)
    variant: str | None
    runtime: str
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    model_bytes: int | None = None
    package_bytes: int | None = None
    package_unzipped_bytes: int | None = None
    throughput: bool = False  # the packaged handler: also measured with 2 workers

    def record(self, **measured: Any) -> ServerResult:
        return ServerResult(model=self.model, server=self.server, label=self.label, variant=self.variant,
                            runtime=self.runtime, model_bytes=self.model_bytes, package_bytes=self.package_bytes,
                            package_unzipped_bytes=self.package_unzipped_bytes, **measured)


@dataclass
class Plan:
    servers: list[Server]
    skipped: list[ServerResult]  # servers whose variant is not in the workspace
    notes: list[str]


def host_arch() -> str:
    return "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"


def runtime_version(model_format: str) -> str:
    dist = RUNTIME_DIST[model_format]
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return dist


def plan_servers(names: list[str], ws: Workspace, scratch: Path, report: Report) -> Plan:
    """Package, extract and describe every server for `names`; variants missing from the workspace are skipped."""
    servers: list[Server] = []
    skipped: list[ServerResult] = []
    notes: list[str] = []
    environments: dict[str, Path] = {}  # format -> an extracted package whose handler serves any variant of it
    formats: set[str] = set()
    for name in names:
        _check_built(ws, name)
        event = smoke_event(ws, name, samples=1)
        handler, has_bytecode = _packaged_handler(ws, name, event, scratch, report)
        environments.setdefault(handler.config["format"], Path(handler.config["paths"][0]))
        keras = _tensorflow_server(ws, name, event)
        servers.append(keras) if isinstance(keras, Server) else skipped.append(keras)
        for server_id, label, variant in VARIANT_SERVERS:
            variant_dir = ws.variant_dir(name, variant)
            if not (variant_dir / "manifest.json").exists():
                skipped.append(ServerResult(name, server_id, label, variant, "", status="skipped",
                                            note=f"{variant} is not in {ws.model_dir(name)}"))
                continue
            manifest = read_manifest(variant_dir)
            fmt = manifest.model.format
            if fmt not in environments:
                environments[fmt] = _extract(_package(ws, name, variant_dir, f"lambda-{fmt}", report), scratch,
                                             f"env-{fmt}")
            formats.add(fmt)
            servers.append(Server(name, server_id, label, "handler", variant, runtime_version(fmt),
                                  _handler_config(environments[fmt], event, manifest, variant_dir, fmt),
                                  env={"EDGEMAAS_MODEL_DIR": str(variant_dir.resolve())},
                                  model_bytes=manifest.model.size_bytes))
        servers.append(handler)
        if not has_bytecode:
            servers.append(_with_bytecode(handler, scratch))
        formats.add(handler.config["format"])
    for fmt in sorted(formats):
        servers.append(_floor(fmt, ws))
    notes.append("warm requests are direct invokes {\"inputs\": [one held-out sample]} of the handler; the raw invoke "
                 "feeds the runtime the same sample already preprocessed (and quantized for int8 inputs)")
    return Plan(servers, skipped, notes)


def _check_built(ws: Workspace, name: str) -> None:
    if not ws.data_file(name).exists() or not ws.selection_file(name).exists():
        raise UserError(f"{name}: nothing to benchmark in {ws.build.resolve()}; run `edgemaas build {name}` (or "
                        f"`edgemaas compress {name}`) first")


def _prepared(manifest: Manifest, event: dict[str, Any]) -> list[list[Any]]:
    """The sample after the manifest's preprocessing: what the model itself takes (before quantization)."""
    return [InputProcessor(step, manifest.limits).transform(event["inputs"]).tolist()
            for step in manifest.preprocessing]


def _handler_config(root: Path, event: dict[str, Any], manifest: Manifest, model_dir: Path, fmt: str
                    ) -> dict[str, Any]:
    return {"kind": "handler", "paths": [str(root)], "cwd": str(root), "event": event, "raw": True, "format": fmt,
            "model_path": str((model_dir / manifest.model.file).resolve()), "feeds": _prepared(manifest, event)}


def _package(ws: Workspace, name: str, variant_dir: Path, folder: str, report: Report) -> Any:
    """A `layout zip` package for this Python and machine, kept in build/_bench/ (model names start with a letter, so
    it is no model's folder) and reused while its inputs are unchanged."""
    report(f"{name}: packaging {variant_dir.name} (layout zip)")
    return package_lambda(variant_dir, ws.build / "_bench" / name / folder, ws.cache(),
                          python_version=default_python_version(), arch=host_arch(), layout="zip")


def _extract(package: Any, scratch: Path, folder: str) -> Path:
    root = scratch / folder
    extract_zip(Path(package.zip_path), root)
    return root


def _packaged_handler(ws: Workspace, name: str, event: dict[str, Any], scratch: Path, report: Report
                      ) -> tuple[Server, bool]:
    """The gate's choice, packaged and extracted; and whether the package carries compiled bytecode."""
    variant_dir = chosen_variant(ws, name)
    package = _package(ws, name, variant_dir, "lambda", report)
    root = _extract(package, scratch, f"{name}-package")
    manifest = read_manifest(root / "model")
    fmt = manifest.model.format
    with zipfile.ZipFile(package.zip_path) as archive:
        has_bytecode = any(n.endswith(".pyc") for n in archive.namelist())
    server = Server(name, "handler", f"packaged handler ({manifest.variant})", "handler", manifest.variant,
                    runtime_version(fmt), _handler_config(root, event, manifest, root / "model", fmt),
                    model_bytes=manifest.model.size_bytes, package_bytes=package.zipped_bytes,
                    package_unzipped_bytes=package.unzipped_bytes, throughput=True)
    return server, has_bytecode


def _with_bytecode(handler: Server, scratch: Path) -> Server:
    """The same package with its Python compiled ahead (unchecked-hash .pyc, valid whatever the files' times): what
    shipping bytecode would save. Lambda's /var/task is read-only, so a package without .pyc compiles every module it
    imports, numpy's included, at each cold start (the worker runs with -B to match)."""
    source = Path(handler.config["paths"][0])
    root = scratch / f"{source.name}-bytecode"
    shutil.copytree(source, root, symlinks=True)
    compileall.compile_dir(str(root), quiet=2, workers=1,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    config = {**handler.config, "paths": [str(root)], "cwd": str(root),
              "model_path": str(root / Path(handler.config["model_path"]).relative_to(source))}
    bytecode = sum(f.stat().st_size for f in root.rglob("*.pyc"))
    return Server(handler.model, "handler-bytecode", "packaged handler + .pyc", "handler", handler.variant,
                  handler.runtime, config, model_bytes=handler.model_bytes,
                  package_unzipped_bytes=(handler.package_unzipped_bytes or 0) + bytecode)


def _tensorflow_server(ws: Workspace, name: str, event: dict[str, Any]) -> Server | ServerResult:
    label = "TensorFlow (Keras predict)"
    variant_dir = ws.variant_dir(name, FLOAT_VARIANT)
    if not (variant_dir / "manifest.json").exists():  # a .tflite or .onnx the user brought has no Keras model
        return ServerResult(name, "tensorflow", label, FLOAT_VARIANT, "", status="skipped",
                            note=f"{FLOAT_VARIANT} is not in {ws.model_dir(name)}")
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf_keras") is None:
        return ServerResult(name, "tensorflow", label, FLOAT_VARIANT, "", status="skipped",
                            note="TensorFlow and tf-keras are not installed: pip install 'edgemaas[train]'")
    manifest = read_manifest(variant_dir)
    site_dirs = list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    config = {"kind": "keras", "site_dirs": site_dirs, "model_path": str((variant_dir / manifest.model.file).resolve()),
              "feeds": _prepared(manifest, event), "format": "keras"}
    return Server(name, "tensorflow", label, "keras", FLOAT_VARIANT, f"tensorflow {_version('tensorflow')} + "
                  f"tf-keras {_version('tf-keras')}", config,
                  env={"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"},
                  model_bytes=manifest.model.size_bytes, package_bytes=_installed_bytes(TENSORFLOW_DISTS))


def _floor(fmt: str, ws: Workspace) -> Server:
    server_id, label = FLOORS[fmt]
    wheels = dependencies.install(dependencies.requirements_for(fmt), default_python_version(), host_arch(),
                                  ws.cache())
    model = identity_model(fmt, ws.cache())
    config = {"kind": "floor", "paths": [str(wheels)], "format": fmt, "model_path": str(model),
              "feeds": [[[0.0] * SHAPE[1]] * SHAPE[0]]}
    return Server(None, server_id, label, "floor", None, runtime_version(fmt), config,
                  model_bytes=model.stat().st_size)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _installed_bytes(dists: tuple[str, ...]) -> int | None:
    """Bytes on disk of the installed distributions' own files (not their dependencies), each file counted once:
    tensorflow and tensorflow-cpu list the same files."""
    files: set[Path] = set()
    for dist in dists:
        try:
            found = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            continue
        files.update(Path(str(f.locate())).resolve() for f in found.files or [])
    return sum(f.stat().st_size for f in files if f.is_file()) or None
