"""Metrics on the held-out split, and how far a variant drifts from the float model."""

from __future__ import annotations

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


def metric_drop(task: str, reference: dict[str, float], candidate: dict[str, float]) -> float:
    """How much worse the candidate is: accuracy points, or percent of the reference RMSE. Negative is better."""
    name, higher_is_better = PRIMARY[task]
    if higher_is_better:
        return (reference[name] - candidate[name]) * 100.0
    return (candidate[name] - reference[name]) / reference[name] * 100.0


def format_metric(task: str, values: dict[str, float]) -> str:
    if task == "classification":
        return f"acc {values['accuracy'] * 100:.2f}%"
    return f"RMSE {values['rmse']:.3g}"
