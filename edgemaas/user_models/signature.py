"""A converted model's manifest: its own signature and hash, read in a child process, with the parent's processing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemaas import __version__
from edgemaas.errors import StageFailed
from edgemaas.isolate import run_isolated
from edgemaas.runtime import Manifest, ModelFile, ModelLoadError, TensorSpec
from edgemaas.runtime.manifest import sha256_file


def variant_manifest(parent: Manifest, model_path: Path, variant: str, provenance: dict[str, Any]) -> Manifest:
    """A manifest for a converted model: its own signature and hash, the parent's processing and provenance."""
    backend = load_model_signature(model_path)
    return Manifest(
        name=parent.name, variant=variant, task=parent.task,
        model=ModelFile(file=model_path.name, format=model_path.suffix.lstrip("."), sha256=sha256_file(model_path),
                        size_bytes=model_path.stat().st_size),
        inputs=backend.inputs, outputs=backend.outputs,
        preprocessing=parent.preprocessing, postprocessing=parent.postprocessing, limits=parent.limits,
        provenance={"created_by": f"edgemaas {__version__}", "parent": parent.model.sha256,
                    "parent_variant": parent.variant, **provenance},
        request_forms=list(parent.request_forms), signature_key=backend.signature_key,
        model_metadata=dict(parent.model_metadata),
        # Keyed by input name: a conversion that renames inputs leaves them unused (examples fall back to 1 and 0).
        example_shapes=dict(parent.example_shapes), example_values=dict(parent.example_values),
    )


@dataclass
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    signature_key: str | None = None  # TFLite: the signature the tensor names come from
    metadata: dict[str, Any] = field(default_factory=dict)  # what the file carries (ONNX metadata_props)


def _signature_job(model_path: str) -> Signature:
    from edgemaas.runtime.backends import open_backend

    path = Path(model_path)
    backend = open_backend(path.suffix.lstrip("."), path.read_bytes())
    return Signature(backend.inputs, backend.outputs, backend.signature_key, dict(backend.metadata))


def load_model_signature(model_path: Path) -> Signature:
    """The model's tensors as the serving backend sees them, read in a child process (a malformed file can crash an
    interpreter). Raises ModelLoadError with the loader's reason."""
    try:
        return run_isolated(_signature_job, str(model_path), timeout=120)
    except StageFailed as exc:
        raise ModelLoadError(str(exc).splitlines()[0].removeprefix("ModelLoadError: ")) from None
