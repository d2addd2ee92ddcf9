"""Train a built-in model from its spec: data, fitted preprocessing, Keras training, held-out metrics, manifest."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np

from edgemaas import __version__
from edgemaas.train import architectures, datasets
from edgemaas.errors import UserError
from edgemaas.fsutil import atomic_dir, atomic_path
from edgemaas.compress.evaluation import metrics
from edgemaas.runtime import Manifest, ModelFile, TensorSpec
from edgemaas.runtime.processing import InputProcessor, OutputProcessor
from edgemaas.runtime.text import OOV_ID, PAD_ID, tokenize
from edgemaas.spec import Spec
from edgemaas.workspace import FLOAT_VARIANT, Workspace

DEFAULT_LIMITS = {"max_batch": 256, "max_text_chars": 1000}


def load_dataset(spec: Spec) -> datasets.Dataset:
    data = spec.data
    assert data is not None
    options = dict(test_fraction=data.test_fraction, seed=spec.train.seed, window=data.window, samples=data.samples)
    if data.dataset:
        return datasets.BUILTIN[data.dataset](**options)
    return datasets.from_npz(spec.resolve(data.path), task=data.task, labels=data.labels, **options)


def fit_preprocessing(ds: datasets.Dataset, spec: Spec) -> dict[str, Any]:
    """The input transform, fitted on the training split only."""
    if ds.kind == "text":
        size = int(spec.model.params.get("vocabulary_size", 1000))
        counts = collections.Counter(t for text in ds.x_train for t in tokenize(str(text)))
        words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][: size - 2]
        vocabulary = ["<pad>", "<oov>"] + words
        assert vocabulary.index("<pad>") == PAD_ID and vocabulary.index("<oov>") == OOV_ID
        return {"input": ds.input_name, "kind": "text", "vocabulary": vocabulary,
                "max_length": spec.data.max_length, "lowercase": True}
    x = ds.x_train.astype(np.float64)
    if ds.normalisation == "per_feature":
        mean, std = x.mean(axis=0), x.std(axis=0)
        std[std == 0] = 1.0
        mean, std = mean.tolist(), std.tolist()
    elif ds.normalisation == "global":
        mean, std = float(x.mean()), float(x.std() or 1.0)
    else:
        mean, std = 0.0, 1.0
    return {"input": ds.input_name, "kind": "numeric", "shape": list(ds.x_train.shape[1:]), "mean": mean, "std": std}


def fit_postprocessing(ds: datasets.Dataset) -> dict[str, Any]:
    if ds.task == "classification":
        return {"kind": "classification", "labels": ds.labels}
    y = ds.y_train.astype(np.float64)
    return {"kind": "regression", "names": [ds.target_name], "mean": float(y.mean()), "std": float(y.std() or 1.0)}


def train(spec: Spec, ws: Workspace) -> Manifest:
    """Train spec's built-in architecture and write build/<name>/keras-float32/{model.keras,manifest.json}."""
    if not spec.model.architecture:
        raise UserError(f"{spec.name}: model.path is a model you bring; there is nothing to train "
                        "(use edgemaas convert or package on it)")
    from edgemaas.tf import keras, tensorflow

    tf, tfk = tensorflow(), keras()
    ds = load_dataset(spec)
    pre, post = fit_preprocessing(ds, spec), fit_postprocessing(ds)
    transform = InputProcessor(pre, DEFAULT_LIMITS).transform
    x_train, x_test = transform(ds.x_train), transform(ds.x_test)
    if ds.task == "regression":
        y_train = ((ds.y_train - post["mean"]) / post["std"]).astype(np.float32)
        outputs, loss = 1, "mse"
    else:
        y_train, outputs, loss = ds.y_train, len(ds.labels), "sparse_categorical_crossentropy"

    tfk.utils.set_random_seed(spec.train.seed)
    tf.config.experimental.enable_op_determinism()
    params = dict(spec.model.params)
    if ds.kind == "text":
        params["vocabulary_size"] = len(pre["vocabulary"])
    model = architectures.BUILTIN[spec.model.architecture](list(x_train.shape[1:]), outputs, **params)
    optimizer = (tfk.optimizers.Adam if spec.train.optimizer == "adam" else tfk.optimizers.SGD)(
        learning_rate=spec.train.learning_rate)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"] if ds.task == "classification" else [])
    callbacks = []
    if spec.train.early_stopping_patience and spec.train.validation_fraction:
        callbacks.append(tfk.callbacks.EarlyStopping(patience=spec.train.early_stopping_patience,
                                                     restore_best_weights=True))
    history = model.fit(x_train, y_train, epochs=spec.train.epochs, batch_size=spec.train.batch_size,
                        validation_split=spec.train.validation_fraction, callbacks=callbacks, verbose=0,
                        shuffle=True)

    values = OutputProcessor(post).values(model.predict(x_test, verbose=0))
    measured = metrics(ds.task, ds.y_test, values)
    if ds.baseline:
        measured.update(ds.baseline)

    out = ws.variant_dir(spec.name, FLOAT_VARIANT)
    # Built in a temporary sibling folder and swapped in whole: a killed run leaves the previous model (or none).
    with atomic_dir(out) as tmp:
        model.save(tmp / "model.keras")
        manifest = Manifest(
            name=spec.name, variant=FLOAT_VARIANT, task=ds.task,
            model=_model_file(tmp / "model.keras", "keras"),
            inputs=[_keras_spec(t) for t in model.inputs], outputs=[_keras_spec(t) for t in model.outputs],
            preprocessing=[pre], postprocessing=post, limits=dict(DEFAULT_LIMITS),
            provenance={"created_by": f"edgemaas {__version__}", "pass": "train",
                        "architecture": spec.model.architecture, "dataset": ds.source,
                        "epochs_run": len(history.history["loss"]),
                        "train_samples": int(len(ds.x_train)), "parameters": int(model.count_params()),
                        "settings": spec.train.model_dump()},
            metrics={"held_out": measured},
        )
        manifest.save(tmp)
        _save_data(ws.data_file(spec.name), ds)
    return manifest


def _save_data(path: Path, ds: datasets.Dataset) -> None:
    """The splits, raw, for conversion (representative data) and evaluation of every variant."""
    def raw(x: np.ndarray) -> np.ndarray:
        return x.astype(str) if ds.kind == "text" else x

    with atomic_path(path, keep_suffix=True) as tmp:  # numpy would append .npz to a name without it
        np.savez_compressed(tmp, x_train=raw(ds.x_train), y_train=ds.y_train, x_test=raw(ds.x_test),
                            y_test=ds.y_test)


def _keras_spec(tensor: Any) -> TensorSpec:
    shape = [-1 if d is None else int(d) for d in tensor.shape]
    return TensorSpec(name=tensor.name.split(":")[0], shape=shape, dtype=tensor.dtype.name)


def _model_file(path: Path, fmt: str) -> ModelFile:
    from edgemaas.runtime.manifest import sha256_file

    return ModelFile(file=path.name, format=fmt, sha256=sha256_file(path), size_bytes=path.stat().st_size)
