"""Training-time compression with the TensorFlow Model Optimization Toolkit: magnitude pruning, weight clustering and
quantization-aware training, each fine-tuned on the training split and stripped before export.

Each applies layer by layer where TF-MOT supports the layer, and records every layer it had to leave alone and why,
so the report can say so. Jobs run in child processes (edgemaas.isolate).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edgemaas.fsutil import atomic_path


def _tfmot() -> Any:
    from edgemaas.tf import tensorflow

    tensorflow()  # sets TF_USE_LEGACY_KERAS before TF-MOT imports Keras
    import tensorflow_model_optimization as tfmot

    return tfmot


def load_keras(path: str) -> Any:
    """Load a Keras model, QAT wrappers included."""
    from edgemaas.tf import load_keras_model

    with _tfmot().quantization.keras.quantize_scope():
        return load_keras_model(path)


def _fine_tune(model: Any, data_path: str, task: str, settings: dict[str, Any], callbacks: list[Any]) -> dict:
    from edgemaas.tf import keras

    tfk = keras()
    tfk.utils.set_random_seed(int(settings.get("seed", 0)))
    with np.load(data_path) as data:
        x, y, x_val, y_val = data["x"], data["y"], data["x_val"], data["y_val"]
    loss = "sparse_categorical_crossentropy" if task == "classification" else "mse"
    model.compile(optimizer=tfk.optimizers.Adam(float(settings.get("learning_rate", 1e-3))), loss=loss)
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=int(settings["epochs"]),
                        batch_size=int(settings.get("batch_size", 32)), callbacks=callbacks, verbose=0)
    return {"fine_tune_epochs": len(history.history["loss"]), "final_val_loss": float(history.history["val_loss"][-1])}


def _per_layer(model: Any, wrap: Callable[[Any], Any], supports: Callable[[Any], str | None]) -> tuple[Any, dict]:
    """Clone the model wrapping each supported layer (as TF-MOT's guides do); note why others were left alone."""
    from edgemaas.tf import keras

    applied, skipped = [], {}

    def clone(layer: Any) -> Any:
        reason = supports(layer)
        if reason is None:
            applied.append(layer.name)
            return wrap(layer)
        if layer.weights:
            skipped[layer.name] = f"{type(layer).__name__}: {reason}"
        return layer

    return keras().models.clone_model(model, clone_function=clone), {"layers_applied": applied,
                                                                      "layers_skipped": skipped}


def prune(source_path: str, out_path: str, data_path: str, task: str, settings: dict[str, Any]) -> dict:
    """Magnitude pruning to settings['target_sparsity'] on a polynomial-decay schedule, fine-tuned, then stripped."""
    tfmot = _tfmot()
    sparsity = tfmot.sparsity.keras
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    model = load_keras(source_path)
    with np.load(data_path) as data:
        samples = len(data["x"])
    steps = int(np.ceil(samples / int(settings.get("batch_size", 32)))) * int(settings["epochs"])
    schedule = sparsity.PolynomialDecay(initial_sparsity=0.0, final_sparsity=float(settings["target_sparsity"]),
                                        begin_step=0, end_step=max(1, int(steps * 0.7)), frequency=max(1, steps // 20))

    def supports(layer: Any) -> str | None:
        if not layer.weights:
            return "no weights"
        return None if PruneRegistry.supports(layer) else "TF-MOT has no pruning rule for this layer type"

    pruned, notes = _per_layer(model, lambda layer: sparsity.prune_low_magnitude(layer, pruning_schedule=schedule),
                               supports)
    notes.update(_fine_tune(pruned, data_path, task, settings, [sparsity.UpdatePruningStep()]))
    stripped = sparsity.strip_pruning(pruned)
    notes["keras_sparsity"] = weight_sparsity(stripped.get_weights())
    _save(stripped, out_path)
    return notes


def cluster(source_path: str, out_path: str, data_path: str, task: str, settings: dict[str, Any]) -> dict:
    """Weight clustering to settings['clusters'] shared values per weight tensor, fine-tuned, then stripped."""
    tfmot = _tfmot()
    clustering = tfmot.clustering.keras
    model = load_keras(source_path)
    params = {"number_of_clusters": int(settings["clusters"]),
              "cluster_centroids_init": clustering.CentroidInitialization.KMEANS_PLUS_PLUS}

    def supports(layer: Any) -> str | None:
        if not layer.weights:
            return "no weights"
        kernels = [w for w in layer.weights if len(w.shape) > 1]
        if kernels and min(int(np.prod(w.shape)) for w in kernels) < params["number_of_clusters"]:
            return f"fewer weights than {params['number_of_clusters']} clusters"
        try:
            clustering.cluster_weights(layer, **params)  # a probe: wrapping does not change the layer
        except Exception as exc:  # TF-MOT says why in its message
            return str(exc).splitlines()[0][:200]
        return None

    clustered, notes = _per_layer(model, lambda layer: clustering.cluster_weights(layer, **params), supports)
    if not notes["layers_applied"]:
        raise ValueError("weight clustering applies to no layer of this model: "
                         + "; ".join(f"{k} ({v})" for k, v in notes["layers_skipped"].items()))
    notes.update(_fine_tune(clustered, data_path, task, settings, []))
    stripped = clustering.strip_clustering(clustered)
    notes["unique_values_per_kernel"] = int(max(len(np.unique(w)) for w in stripped.get_weights() if w.ndim > 1))
    _save(stripped, out_path)
    return notes


def quantization_aware(source_path: str, out_path: str, data_path: str, task: str, settings: dict[str, Any]) -> dict:
    """Quantization-aware training: fake-quant the layers TF-MOT's 8-bit scheme supports, fine-tune, save."""
    tfmot = _tfmot()
    qk = tfmot.quantization.keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_registry \
        import Default8BitQuantizeRegistry

    registry = Default8BitQuantizeRegistry()
    model = load_keras(source_path)

    def supports(layer: Any) -> str | None:
        if not layer.weights:
            return "no weights"
        return None if registry.supports(layer) else "not in TF-MOT's default 8-bit QAT registry"

    annotated, notes = _per_layer(model, qk.quantize_annotate_layer, supports)
    if not notes["layers_applied"]:
        raise ValueError("quantization-aware training applies to no layer of this model: "
                         + "; ".join(f"{k} ({v})" for k, v in notes["layers_skipped"].items()))
    with qk.quantize_scope():
        qat = qk.quantize_apply(annotated)
    notes.update(_fine_tune(qat, data_path, task, settings, []))
    _save(qat, out_path)
    return notes


def weight_sparsity(weights: list[np.ndarray]) -> float:
    """Fraction of exact zeros over the weight matrices (kernels, embeddings; biases and scalars left out)."""
    kernels = [w for w in weights if np.ndim(w) > 1]
    total = sum(w.size for w in kernels)
    return float(sum(int(np.sum(w == 0)) for w in kernels) / total) if total else 0.0


def _save(model: Any, out_path: str) -> None:
    with atomic_path(out_path, keep_suffix=True) as tmp:  # Keras picks the format from the extension
        model.save(tmp)
