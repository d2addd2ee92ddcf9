"""Metrics on the held-out split, and how far a variant drifts from the float model."""

from __future__ import annotations

from typing import Any

import numpy as np

# The metric the gate watches, per task, and whether higher is better.
PRIMARY = {"classification": ("accuracy", True), "regression": ("rmse", False)}


def metrics(task: str, y_true: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """values: class probabilities (classification) or predictions in target units (regression)."""
    if task == "classification":
        predicted = np.argmax(values, axis=1)
        return {"accuracy": float(np.mean(predicted == y_true)), "samples": int(len(y_true))}
    predicted = values.reshape(len(y_true), -1)[:, 0].astype(np.float64)
    truth = y_true.astype(np.float64)
    residual = predicted - truth
    total = np.sum((truth - truth.mean()) ** 2)
    return {
        "rmse": float(np.sqrt(np.mean(residual ** 2))),
        "mae": float(np.mean(np.abs(residual))),
        "r2": float(1 - np.sum(residual ** 2) / total) if total > 0 else float("nan"),
        "samples": int(len(y_true)),
    }


def metric_drop(task: str, reference: dict[str, Any], candidate: dict[str, Any]) -> float:
    """How much worse the candidate is: accuracy (or agreement) points, or percent of the reference RMSE (or of the
    original's output scale, for parity). Negative is better."""
    if task == "parity":
        if "agreement" in candidate:
            return (reference["agreement"] - candidate["agreement"]) * 100.0
        return (candidate["output_rmse"] - reference["output_rmse"]) * 100.0
    name, higher_is_better = PRIMARY[task]
    if higher_is_better:
        return (reference[name] - candidate[name]) * 100.0
    return (candidate[name] - reference[name]) / reference[name] * 100.0


def format_metric(task: str, values: dict[str, Any]) -> str:
    if "agreement" in values:
        return f"agree {values['agreement'] * 100:.2f}%"
    if "output_rmse" in values:
        return f"out-RMSE {values['output_rmse']:.3g}"
    if task == "classification":
        return f"acc {values['accuracy'] * 100:.2f}%"
    return f"RMSE {values['rmse']:.3g}"


def parity_metrics(reference: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    """Without labelled eval data, agreement with the original model replaces the metric.

    Multi-output (class-like) models: the share of samples whose top output agrees. Otherwise: the RMSE between the
    outputs relative to the spread of the original's outputs.
    """
    reference = reference.reshape(len(reference), -1).astype(np.float64)
    values = values.reshape(len(values), -1).astype(np.float64)
    scale = float(reference.std()) or 1.0
    result: dict[str, Any] = {"output_rmse": float(np.sqrt(np.mean((values - reference) ** 2)) / scale),
                              "samples": int(len(reference))}
    if reference.shape[1] > 1:
        result["agreement"] = float(np.mean(np.argmax(values, 1) == np.argmax(reference, 1)))
        result["metric"] = "agreement"
    else:
        result["metric"] = "output_rmse"
    return result
