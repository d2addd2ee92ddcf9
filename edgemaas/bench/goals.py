"""The benchmark's goals, as ratios of numbers measured in the same run (issue 7).

- cold start of the packaged handler at most 1/20 of the TensorFlow server, and at most 1.5x the floor;
- warm p50 through the handler at most 1/30 of Keras `model.predict` on one sample; handler at most 1.5x the raw
  invoke of the same model file;
- every int8 variant's warm p50 no slower than its float32 counterpart on the same runtime; the CNN's full int8 on
  LiteRT at most 0.7x its float32.
A goal whose servers were not both measured is listed with no ratio (neither met nor missed).
"""

from __future__ import annotations

from typing import Callable

from edgemaas.bench.results import BenchResult, Goal, ServerResult

# int8 variant -> its float32 counterpart on the same runtime
INT8_PAIRS = {"litert-dynamic": "litert-float32", "litert-int8": "litert-float32",
              "ort-dynamic": "ort-float32", "ort-qdq": "ort-float32"}
# Stricter per-model targets for an int8 pair (the CNN goal).
STRICT_INT8 = {("cnn", "litert-int8"): 0.7}


def _cold(server: ServerResult) -> float | None:
    return server.cold_start_median_ms


def _warm(server: ServerResult) -> float | None:
    return server.warm.p50_ms if server.warm else None


def _raw(server: ServerResult) -> float | None:
    return server.raw.p50_ms if server.raw else None


def _ratio(model: str, goal: str, description: str, target: float, numerator: ServerResult | None,
           denominator: ServerResult | None, measure: Callable[[ServerResult], float | None],
           denominator_measure: Callable[[ServerResult], float | None] | None = None, what: str = "") -> Goal:
    denominator_measure = denominator_measure or measure
    top = measure(numerator) if numerator and numerator.measured else None
    bottom = denominator_measure(denominator) if denominator and denominator.measured else None
    if top is None or bottom is None or bottom <= 0:
        missing = [s for s, v in ((numerator, top), (denominator, bottom)) if v is None]
        names = ", ".join(s.label for s in missing if s) or "a server"
        return Goal(model, goal, description, target, None, None, f"not measured: {names}")
    ratio = top / bottom
    detail = f"{numerator.label} {top:.3g} ms / {denominator.label}{what} {bottom:.3g} ms"
    return Goal(model, goal, description, target, ratio, ratio <= target, detail)


def evaluate_goals(result: BenchResult) -> list[Goal]:
    goals = []
    for model in result.models:
        handler = result.server(model, "handler")
        tensorflow = result.server(model, "tensorflow")
        floor = result.floor("onnx" if handler and handler.variant and handler.variant.startswith("onnx")
                             else "tflite")
        goals.append(_ratio(model, "cold_vs_tensorflow", "cold start: handler ≤ 1/20 of TensorFlow", 1 / 20,
                            handler, tensorflow, _cold))
        goals.append(_ratio(model, "cold_vs_floor", "cold start: handler ≤ 1.5× the floor", 1.5, handler, floor,
                            _cold))
        goals.append(_ratio(model, "warm_vs_keras", "warm p50: handler ≤ 1/30 of Keras model.predict", 1 / 30,
                            handler, tensorflow, _warm))
        goals.append(_ratio(model, "handler_vs_raw", "warm p50: handler ≤ 1.5× the raw invoke", 1.5, handler,
                            handler, _warm, _raw, what=" raw invoke"))
        for int8, float32 in INT8_PAIRS.items():
            quantized, reference = result.server(model, int8), result.server(model, float32)
            if quantized is None or reference is None:
                continue
            target = STRICT_INT8.get((model, int8), 1.0)
            description = f"warm p50: {quantized.label} ≤ {target:g}× {reference.label}"
            goal = _ratio(model, f"{int8}_vs_float32", description, target, quantized, reference, _warm)
            raw_int8, raw_float = (_raw(quantized), _raw(reference)) if goal.ratio is not None else (None, None)
            if raw_int8 and raw_float:  # the runtime alone, without our quantization and processing around it
                goal.detail += f"; raw invoke {raw_int8:.3g} / {raw_float:.3g} ms = {raw_int8 / raw_float:.3g}"
            goals.append(goal)
    return goals
