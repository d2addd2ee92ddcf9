"""The artifact manifest: the one JSON record that travels with every model file.

It says what the file is, its tensor signature, the pre- and post-processing a caller needs, how it was made and
what it measured. The runtime needs nothing else to serve a model. Stdlib only: this module ships in packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

SCHEMA = "edgemaas.manifest/1"
MANIFEST_NAME = "manifest.json"


@dataclass
class TensorSpec:
    """One model tensor as the backend sees it. `shape` uses -1 for a dynamic dimension."""

    name: str
    shape: list[int]
    dtype: str
    scale: float = 0.0  # quantization scale; 0.0 means not quantized
    zero_point: int = 0
    # The name callers use when it differs from the tensor's: a TFLite signature's name ("regressors" for the
    # tensor "Identity_1"). Empty: the tensor name is the one.
    key: str = ""
    # `shape` with each dynamic dimension as the file names it ("batch", "height"), or "?" when unnamed;
    # None when the manifest predates it (then every -1 in `shape` is an unnamed dimension).
    dims: list[int | str] | None = None

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype in ("int8", "uint8", "int16")

    @property
    def public_name(self) -> str:
        return self.key or self.name

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)

    def shown_dims(self) -> list[int | str]:
        """The shape as describe shows it: fixed sizes as numbers, dynamic ones by name (or "?")."""
        if self.dims is not None and len(self.dims) == len(self.shape):
            return list(self.dims)
        return [d if d >= 0 else "?" for d in self.shape]


@dataclass
class ModelFile:
    file: str
    format: str  # "tflite" | "onnx" | "keras" | "savedmodel"
    sha256: str
    size_bytes: int


@dataclass
class Manifest:
    name: str
    variant: str
    task: str  # "classification" | "regression"
    model: ModelFile
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # One entry per model input, in order: what the caller sends and how it becomes the tensor.
    # {"input": "image", "kind": "numeric", "shape": [8, 8], "mean": 0.0, "std": 16.0}
    # {"input": "text", "kind": "text", "vocabulary": [...], "max_length": 16, "lowercase": true}
    preprocessing: list[dict[str, Any]]
    # {"kind": "classification", "labels": [...]} or {"kind": "regression", "names": [...], "mean": .., "std": ..}
    postprocessing: dict[str, Any]
    limits: dict[str, int] = field(default_factory=lambda: {"max_batch": 256, "max_text_chars": 1000})
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA
    # Request forms the model takes on POST /predict: "batch" ({"inputs": [sample, ...]} -> predictions) and/or
    # "tensors" ({"inputs": {name: tensor}} -> every output by name). Empty: decided from the task (older manifests).
    # Every model also takes the Open Inference Protocol (POST /v2/models/<name>/infer).
    request_forms: list[str] = field(default_factory=list)
    # TFLite: the signature the names come from ("serving_default"); None for ONNX or a file without signatures.
    signature_key: str | None = None
    # What the file itself carries, kept verbatim and shown by describe, never interpreted: ONNX metadata_props,
    # TFLite metadata entries and associated files ({"props": {...}, "files": [...]}).
    model_metadata: dict[str, Any] = field(default_factory=dict)
    # Shapes the package-time smoke test ran ({input name: shape}): describe's examples and load checks use them for
    # the dimensions the file leaves open (else 1, which a model may not be able to run).
    example_shapes: dict[str, list[int]] = field(default_factory=dict)
    # Values of the smoke test's small inputs ({"sr": 16000}, at most 64 values each): examples send them instead
    # of zeros, since a model may branch on them (Silero VAD on its sample rate).
    example_values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        if data.get("schema") != SCHEMA:
            raise ModelLoadError(f"manifest schema is {data.get('schema')!r}; this runtime reads {SCHEMA!r}")
        try:
            fields = dict(data)
            fields["model"] = ModelFile(**data["model"])
            fields["inputs"] = [TensorSpec(**t) for t in data["inputs"]]
            fields["outputs"] = [TensorSpec(**t) for t in data["outputs"]]
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise ModelLoadError(f"manifest is malformed: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, directory: Path) -> Path:
        """Write manifest.json atomically (temporary name, then rename) so a crash never leaves half a file."""
        path = Path(directory) / MANIFEST_NAME
        # Named as edgemaas.fsutil names temporaries (.<name>.tmp.<pid>.<8 hex>), so its stale cleanup knows it;
        # this module ships alone and cannot import fsutil.
        tmp = path.with_name(f".{MANIFEST_NAME}.tmp.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"no {MANIFEST_NAME} in {directory}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    return Manifest.from_dict(data)


def intact(directory: Path, manifest: Manifest) -> bool:
    """Whether the model file a manifest names is there and matches its sha256 (for reusing earlier work)."""
    path = Path(directory) / manifest.model.file
    return path.is_file() and sha256_file(path) == manifest.model.sha256


def read_verified_model(directory: Path, manifest: Manifest) -> bytes:
    """Read the model file once and check it against the manifest's sha256 (tampered or truncated files fail)."""
    path = Path(directory) / manifest.model.file
    try:
        content = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise ModelLoadError(f"model file {path} named by the manifest is missing") from None
    actual = sha256_bytes(content)
    if actual != manifest.model.sha256:
        raise ModelLoadError(
            f"{path} does not match its manifest (sha256 {actual[:12]}..., expected {manifest.model.sha256[:12]}...): "
            "the file was modified or truncated; rebuild the package"
        )
    return content
