"""Models the user brings: detect the format from the content, and make a servable artifact with a manifest.

A .tflite or .onnx file is served as it is; a Keras file or SavedModel is converted to float32 TFLite first (in its
own process), since the runtime carries no TensorFlow.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from edgemaas import __version__
from edgemaas.errors import StageFailed, UserError
from edgemaas.fsutil import atomic_dir
from edgemaas.isolate import run_isolated
from edgemaas.user_models.model_safety import check_model_code
from edgemaas.secret_scan import check_no_secrets
from edgemaas.runtime import Manifest, ModelFile, ModelLoadError, TensorSpec
from edgemaas.runtime.tensors import DEFAULT_MAX_INPUT_ELEMENTS, SERVED_DTYPES
from edgemaas.user_models.signature import variant_manifest
from edgemaas.train.training import DEFAULT_LIMITS
from edgemaas.workspace import Workspace

KERAS_FORMATS = ("keras", "h5", "savedmodel")


def detect_format(path: Path) -> str:
    """'tflite', 'onnx', 'keras' (Keras v3 zip), 'h5' (Keras HDF5) or 'savedmodel', judged by content, not name."""
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise UserError(f"{path} is a directory without saved_model.pb; give a SavedModel directory or a model file")
    if not path.exists():
        raise UserError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[4:8] == b"TFL3":  # the TFLite flatbuffer's file identifier
        return "tflite"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    if head.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
        if "config.json" in names and ({"model.weights.h5", "metadata.json"} & names):
            return "keras"
        raise UserError(f"{path} is a zip archive but not a Keras model (no config.json and model.weights.h5)")
    if _looks_like_onnx(path):
        return "onnx"
    raise UserError(f"{path}: not a model format edgemaas reads; expected .tflite, .onnx, .keras, .h5 or a "
                    "SavedModel directory (the format is read from the content, so a renamed file is fine)")


def _looks_like_onnx(path: Path) -> bool:
    try:
        import onnx

        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # protobuf raises DecodeError and friends on anything that is not ONNX
        return False
    return model.ir_version > 0 and len(model.graph.node) > 0


ONNX_SINGLE_FILE_LIMIT = 2 * 1024 ** 3  # protobuf's limit: a larger ONNX model must keep its weights outside


def copy_model_file(path: Path, fmt: str, target: Path) -> None:
    """Copy a model file; an ONNX file whose weights sit in separate files (torch.onnx.export(..., external_data=
    True), exports of large models) becomes one self-contained file, since the runtime loads the model from bytes."""
    if fmt != "onnx" or not _external_onnx_data(path):
        shutil.copyfile(path, target)
        return
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=True)
    except Exception as exc:  # onnx's ValidationError, OSError...: a weights file missing or outside the folder
        raise UserError(f"{path}: this ONNX file keeps its weights in separate file(s) that could not be read "
                        f"({exc}); keep them next to it, as the exporter wrote them") from None
    if model.ByteSize() >= ONNX_SINGLE_FILE_LIMIT:
        raise UserError(f"{path}: the model's weights are {model.ByteSize() / 1024 ** 3:.1f} GB, over the 2 GB an "
                        "ONNX file can hold in one piece; edgemaas serves models from a single file")
    onnx.save_model(model, str(target))


def _external_onnx_data(path: Path) -> bool:
    import onnx

    def graph_tensors(graph: Any) -> Any:  # initializers and constant attributes, subgraphs (If, Loop) included
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    yield from graph_tensors(subgraph)

    model = onnx.load_model(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph_tensors(model.graph))


def model_name(path: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower() if path.is_file() else path.name.lower()).strip("-")
    return (name if name and name[0].isalpha() else f"model-{name}")[:40]


def import_model(path: Path, ws: Workspace, name: str | None = None, labels: list[str] | None = None,
                 timeout_s: float = 600, trust_code: bool = False) -> Manifest:
    """Make build/<name>/imported/ from a model file: the servable model plus a manifest from its own signature.

    A Keras file carrying Python code (Lambda layers) is refused unless `trust_code`."""
    fmt = detect_format(path)
    check_model_code(path, fmt, trust_code)
    name = name or model_name(path)
    with atomic_dir(ws.variant_dir(name, "imported")) as tmp:  # nothing half-made is ever left behind
        if fmt in KERAS_FORMATS:
            target = tmp / "model.tflite"
            try:
                run_isolated(_keras_to_tflite_job, str(path), fmt, str(target), trust_code, timeout=timeout_s,
                             log_path=tmp / "convert.log")
            except StageFailed as exc:
                raise UserError(f"{path}: could not convert this {fmt} model to TFLite: {exc}") from None
            variant, pass_name = "tflite-float32", f"import-{fmt}"
        else:
            target = tmp / f"model.{fmt}"
            copy_model_file(path, fmt, target)
            variant, pass_name = f"{fmt}-imported", "import"
        try:
            shell = _shell_manifest(name, target, labels, path)
            manifest = variant_manifest(shell, target, variant, {"pass": pass_name, "source": str(path),
                                                                 "source_format": fmt, **_trust(trust_code)})
        except ModelLoadError as exc:
            raise UserError(f"{path}: the runtime cannot load this model: {exc}") from None
        manifest.provenance.pop("parent", None)
        manifest.save(tmp)
    return manifest


def _shell_manifest(name: str, model_path: Path, labels: list[str] | None, source: Path | None = None) -> Manifest:
    """The manifest of a model brought without a task, from its own signature.

    Every input and output is recorded (names, dtypes, shapes with dynamic dimensions, the TFLite signature's
    names) and served in the tensor form and the Open Inference Protocol. A model with one input whose sample shape
    is fixed also takes the batch form (`{"inputs": [sample, ...]}`), labelled when `labels` are given."""
    from edgemaas.user_models.signature import load_model_signature
    from edgemaas.user_models.tflite_metadata import custom_ops, read_tflite_metadata

    try:
        signature = load_model_signature(model_path)
    except ModelLoadError as exc:
        ops = custom_ops(model_path) if model_path.suffix == ".tflite" else []
        if ops:
            raise UserError(f"{source or model_path}: the model uses the custom op(s) {', '.join(ops)}, which LiteRT "
                            "cannot run (it has no kernel for them); re-export the model with builtin ops only, "
                            "or export it to ONNX") from None
        raise
    _check_dtypes(source or model_path, signature.inputs + signature.outputs)
    batchable = len(signature.inputs) == 1 and _fixed_sample(signature.inputs[0])
    if labels and not (batchable or len(signature.inputs) > 1 and all(map(_fixed_sample, signature.inputs))):
        raise UserError(f"{source or model_path}: --labels is for a classifier taking a batch of samples of a fixed "
                        f"shape; this model's inputs are {_shapes(signature.inputs)}. Leave out --labels: the model is "
                        "served in tensors, every output by name")
    if labels:
        forms = ["batch"] if len(signature.inputs) > 1 else ["batch", "tensors"]
    else:
        forms = ["batch", "tensors"] if batchable else ["tensors"]
    steps = [{"input": _field_name(spec), "kind": "numeric", "shape": spec.shape[1:], "mean": 0.0, "std": 1.0}
             for spec in signature.inputs] if "batch" in forms else []
    post: dict[str, Any] = {"kind": "classification", "labels": labels} if labels else {"kind": "raw"}
    metadata = dict(signature.metadata)
    if model_path.suffix == ".tflite":
        metadata.update(read_tflite_metadata(model_path))
    task = "classification" if labels else ("raw" if batchable else "tensors")
    return Manifest(name=name, variant="source", task=task,
                    model=ModelFile(file=model_path.name, format="", sha256="", size_bytes=0),
                    inputs=signature.inputs, outputs=signature.outputs, preprocessing=steps, postprocessing=post,
                    limits={**DEFAULT_LIMITS, "max_input_elements": DEFAULT_MAX_INPUT_ELEMENTS},
                    provenance={"created_by": f"edgemaas {__version__}"}, request_forms=forms,
                    signature_key=signature.signature_key, model_metadata=metadata)


def _fixed_sample(spec: TensorSpec) -> bool:
    return len(spec.shape) >= 1 and all(d >= 0 for d in spec.shape[1:])


def _shapes(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.public_name} {s.shown_dims()}" for s in specs)


def _check_dtypes(model_path: Path, specs: list[TensorSpec]) -> None:
    odd = [f"{s.public_name} ({s.dtype})" for s in specs if s.dtype not in SERVED_DTYPES]
    if odd:
        raise UserError(f"{model_path}: edgemaas serves tensors of {', '.join(SERVED_DTYPES)}; this model has "
                        f"{', '.join(odd)}")


def _field_name(spec: TensorSpec) -> str:
    return re.sub(r"^serving_default_|:\d+$", "", spec.name) or "inputs"


def _keras_to_tflite_job(source: str, fmt: str, target: str, trust_code: bool = False) -> int:
    """Runs in a child process: a Keras file or SavedModel to float32 TFLite."""
    from edgemaas.tf import load_keras_model, tensorflow

    tf = tensorflow()
    if fmt == "savedmodel":
        converter = tf.lite.TFLiteConverter.from_saved_model(source)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(load_keras_model(source, trust_code))
    content = converter.convert()
    Path(target).write_bytes(content)
    return len(content)


ROOTS = {"keras": "keras-float32", "h5": "keras-float32", "savedmodel": "savedmodel", "tflite": "tflite-original",
         "onnx": "onnx-original"}


def import_root(path: Path, ws: Workspace, name: str | None = None, labels: list[str] | None = None,
                timeout_s: float = 600, trust_code: bool = False) -> tuple[str, Manifest]:
    """Copy a model the user brings, unchanged, into build/<name>/<root>/ as the root every variant derives from.

    Its manifest's signature comes from the model itself (Keras and SavedModel through a float32 TFLite conversion
    in a child process, since only TensorFlow can read them).
    """
    fmt = detect_format(path)
    check_model_code(path, fmt, trust_code)
    name = name or model_name(path)
    root = ROOTS[fmt]
    with atomic_dir(ws.variant_dir(name, root)) as tmp:
        manifest = _fill_root(path, fmt, name, root, tmp, labels, timeout_s, trust_code)
    return root, manifest


def _fill_root(path: Path, fmt: str, name: str, root: str, tmp: Path, labels: list[str] | None, timeout_s: float,
               trust_code: bool) -> Manifest:
    """The root variant's files and manifest, written into the staging folder `tmp`."""
    if fmt == "savedmodel":
        target = tmp / "model"
        check_no_secrets({f.relative_to(path).as_posix(): f for f in sorted(path.rglob("*")) if f.is_file()},
                         where=f"the workspace (SavedModel {path})")
        shutil.copytree(path, target)
        probe = tmp / ".signature.tflite"
    else:
        target = tmp / ("model.h5" if fmt == "h5" else f"model.{fmt}")
        copy_model_file(path, fmt, target)
        probe = tmp / ".signature.tflite" if fmt in KERAS_FORMATS else target
    if probe != target:
        try:
            run_isolated(_keras_to_tflite_job, str(path), fmt, str(probe), trust_code, timeout=timeout_s,
                         log_path=tmp / "signature.log")
        except StageFailed as exc:
            raise UserError(f"{path}: could not read this {fmt} model's signature: {exc}") from None
    try:
        shell = _shell_manifest(name, probe, labels, path)
    except ModelLoadError as exc:
        raise UserError(f"{path}: the runtime cannot load this model: {exc}") from None
    if probe != target:
        probe.unlink()
    manifest = Manifest(
        name=name, variant=root, task=shell.task,
        model=ModelFile(target.name, fmt if fmt != "h5" else "keras", _sha256_path(target), _size(target)),
        inputs=shell.inputs, outputs=shell.outputs, preprocessing=shell.preprocessing,
        postprocessing=shell.postprocessing, limits=shell.limits,
        provenance={"created_by": f"edgemaas {__version__}", "pass": "import", "source": str(path),
                    "source_format": fmt, **_trust(trust_code)},
        request_forms=shell.request_forms, signature_key=shell.signature_key, model_metadata=shell.model_metadata)
    manifest.save(tmp)
    return manifest


def _trust(trust_code: bool) -> dict[str, bool]:
    """Recorded so that later passes loading the same file honour the user's choice (edgemaas.tf.trusted_code)."""
    return {"trust_model_code": True} if trust_code else {}


def _sha256_path(path: Path) -> str:
    """A file's sha256, or for a directory (SavedModel) the sha256 over its files' relative names and contents."""
    from edgemaas.runtime.manifest import sha256_file

    if path.is_file():
        return sha256_file(path)
    import hashlib

    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(item.relative_to(path).as_posix().encode() + b"\0" + item.read_bytes())
    return digest.hexdigest()


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
