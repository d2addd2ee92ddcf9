"""The compression passes, as a catalogue of variants: each names its parent, its output format and the job (a
module-level function run in its own process) that makes it from the parent's model file.

Adding a quantization mode is one entry here and, at most, one job function.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from edgemaas.compress.passes import onnx_passes, tflite_passes, tfmot_passes

# Roots: the model everything derives from. A built-in or a Keras file the user brings is `keras-float32`; a
# SavedModel is `savedmodel`; a .tflite or .onnx file the user brings is `tflite-original` / `onnx-original`.
KERAS_ROOT, SAVEDMODEL_ROOT, TFLITE_ROOT, ONNX_ROOT = "keras-float32", "savedmodel", "tflite-original", "onnx-original"


@dataclass(frozen=True)
class Variant:
    name: str
    format: str  # "tflite" | "onnx" | "keras" (an intermediate that does not ship)
    parent: str
    job: Callable[..., dict]
    file: str  # the model file's name in the variant's folder
    inputs: tuple[str, ...] = ()  # data the job takes after (source, out): "representative", "finetune", "parity"
    settings: dict[str, Any] = field(default_factory=dict)
    trains: bool = False  # fine-tunes, so it needs labelled training data

    @property
    def ships(self) -> bool:
        return self.format in ("tflite", "onnx")


def catalogue(compress: Any, task: str) -> dict[str, Variant]:
    """Every variant, configured from the spec's compress section."""
    tune = {"task": task, "seed": 0}
    pruning = {**tune, "target_sparsity": compress.pruning.target_sparsity, "epochs": compress.pruning.epochs}
    clustering = {**tune, "clusters": compress.clustering.clusters, "epochs": compress.clustering.epochs}
    qat = {**tune, "epochs": compress.qat.epochs}
    onnx = compress.onnx
    entries = [
        *(Variant(f"tflite-{mode}", "tflite", KERAS_ROOT, tflite_passes.convert_keras, "model.tflite",
                  ("representative",) if mode in ("int8", "int16x8") else (), {"mode": mode})
          for mode in tflite_passes.MODES),
        Variant("keras-pruned", "keras", KERAS_ROOT, tfmot_passes.prune, "model.keras", ("finetune",), pruning, True),
        Variant("tflite-pruned", "tflite", "keras-pruned", tflite_passes.convert_keras, "model.tflite", (),
                {"mode": "float32"}),
        Variant("tflite-pruned-dynamic", "tflite", "keras-pruned", tflite_passes.convert_keras, "model.tflite", (),
                {"mode": "dynamic"}),
        Variant("tflite-pruned-int8", "tflite", "keras-pruned", tflite_passes.convert_keras, "model.tflite",
                ("representative",), {"mode": "int8"}),
        Variant("keras-clustered", "keras", KERAS_ROOT, tfmot_passes.cluster, "model.keras", ("finetune",),
                clustering, True),
        Variant("tflite-clustered", "tflite", "keras-clustered", tflite_passes.convert_keras, "model.tflite", (),
                {"mode": "float32"}),
        Variant("tflite-clustered-int8", "tflite", "keras-clustered", tflite_passes.convert_keras, "model.tflite",
                ("representative",), {"mode": "int8"}),
        # QAT models keep their fake-quant variables only in HDF5 (the .keras loader refuses them).
        Variant("keras-qat", "keras", KERAS_ROOT, tfmot_passes.quantization_aware, "model.h5", ("finetune",), qat,
                True),
        Variant("tflite-qat-int8", "tflite", "keras-qat", tflite_passes.convert_keras, "model.tflite",
                ("representative",), {"mode": "int8"}),
        Variant("onnx-float32", "onnx", KERAS_ROOT, onnx_passes.export_onnx, "model.onnx", ("parity",),
                {"opset": onnx.opset}),
        Variant("onnx-float16", "onnx", "onnx-float32", onnx_passes.convert_float16, "model.onnx"),
        Variant("onnx-dynamic", "onnx", "onnx-float32", onnx_passes.quantize_dynamic, "model.onnx", (),
                {"per_channel": onnx.per_channel}),
        Variant("onnx-qdq", "onnx", "onnx-float32", onnx_passes.quantize_static, "model.onnx", ("representative",),
                {"method": onnx.calibration_method, "per_channel": onnx.per_channel}),
    ]
    return {v.name: v for v in entries}


def plan(wanted: list[str], compress: Any, task: str, root: str, labelled: bool) -> tuple[list[Variant], dict]:
    """The variants to make from `root`, parents first, and a note for each wanted variant that cannot apply."""
    table = catalogue(compress, task)
    skipped: dict[str, str] = {}
    chosen: list[Variant] = []

    def applies(variant: Variant) -> str | None:
        if variant.trains and not labelled:
            return "needs labelled training data to fine-tune (a spec's data section)"
        if root == KERAS_ROOT:
            return None
        if root == SAVEDMODEL_ROOT:
            if variant.format == "keras":
                return "TF-MOT passes need a Keras model; a SavedModel is not one (bring the .keras file)"
            return None
        if root == TFLITE_ROOT and variant.format in ("tflite", "keras"):
            return "a .tflite file cannot be re-quantized or pruned; bring the Keras model or SavedModel for this"
        if root == ONNX_ROOT and variant.format in ("tflite", "keras"):
            return "an .onnx file cannot become TFLite here; bring the Keras model or SavedModel for this"
        return None

    def add(name: str) -> bool:
        if name == root or any(v.name == name for v in chosen):
            return True
        variant = table[name]
        reason = applies(variant)
        if reason is None and root == ONNX_ROOT and name == "onnx-float32":
            reason = "the model you brought is already ONNX float32 (onnx-original)"
        if reason is None:
            parent = _parent_for(variant, root)
            if add(parent):
                chosen.append(replace(variant, parent=parent))
                return True
            reason = f"its parent {parent} cannot be made: {skipped[parent]}"
        skipped[name] = reason
        return False

    for name in wanted:
        add(name)
    return chosen, {name: reason for name, reason in skipped.items() if name in wanted}


def _parent_for(variant: Variant, root: str) -> str:
    """Re-root the catalogue's parents onto the model the user brought."""
    if root == SAVEDMODEL_ROOT and variant.name == "onnx-float32":
        return "tflite-float32"  # tf2onnx reads Keras models and .tflite files; a SavedModel goes through TFLite
    if root == ONNX_ROOT and variant.parent == "onnx-float32":
        return ONNX_ROOT
    return root if variant.parent == KERAS_ROOT else variant.parent
