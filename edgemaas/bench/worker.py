"""One benchmark server in one fresh process: start, first result, warm requests, raw invoke; prints JSON timings.

Run as a script by `measure.py` (`python -I -S -B worker.py CONFIG_JSON`): the interpreter sees the standard library
only, and this script adds exactly the folders its server needs (`paths` to sys.path, `site_dirs` through
`site.addsitedir` so their .pth files count). So what a server costs to start and hold in memory is its own.
Standard library only here, until the server's own imports.

Kinds:
- `handler`: `import handler` (the Lambda handler, which loads its model at import; EDGEMAAS_MODEL_DIR may point it
  at another variant), then `handler.handler(event, None)` per request;
- `keras`: TensorFlow with tf-keras, `model.predict(x)` per request, and `model(x)` measured after;
- `floor`: numpy and the inference runtime alone, invoking an identity model.
`handler` and `floor` also time the raw invoke: the runtime's own interpreter/session on the same model file, fed
the prepared tensor, with nothing of ours around it.

The last stdout line is `BENCH <json>`. With `throughput`, the worker prints `READY` after its first result, waits
for a line on stdin, then serves `throughput` requests back to back and reports when it started and finished.
"""

from __future__ import annotations

import time

STARTED = time.time()  # wall clock: the parent noted its own clock just before starting this process
_T0 = time.perf_counter()

import json  # noqa: E402 (timed from the start)
import os  # noqa: E402
import site  # noqa: E402
import sys  # noqa: E402

MARKER = "BENCH "


def peak_rss_mb() -> float:
    """VmHWM: the most resident memory this process has held."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(call, count: int) -> list[float]:
    """Milliseconds per call, `count` calls one after another."""
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        call()
        samples.append((clock() - start) / 1e6)
    return samples


def raw_runner(model_format: str, model_path: str, feeds: list) -> object:
    """The inference runtime alone on the model file: set the inputs, invoke, read the outputs."""
    import numpy as np

    if model_format == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=model_path)
        interpreter.allocate_tensors()
        details = interpreter.get_input_details()
        arrays = [_as_input(np, feed, d["dtype"], d.get("quantization", (0.0, 0))) for feed, d in zip(feeds, details)]
        if any(tuple(d["shape"]) != a.shape for d, a in zip(details, arrays)):
            for d, a in zip(details, arrays):
                interpreter.resize_tensor_input(d["index"], list(a.shape))
            interpreter.allocate_tensors()
        outputs = [d["index"] for d in interpreter.get_output_details()]
        pairs = [(d["index"], a) for d, a in zip(details, arrays)]

        def run() -> list:
            for index, array in pairs:
                interpreter.set_tensor(index, array)
            interpreter.invoke()
            return [interpreter.get_tensor(index) for index in outputs]

        return run
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    types = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(float16)": np.float16}
    named = {i.name: _as_input(np, feed, types.get(i.type, np.float32), (0.0, 0))
             for feed, i in zip(feeds, session.get_inputs())}
    return lambda: session.run(None, named)


def _as_input(np, feed: list, dtype, quantization: tuple) -> object:
    """The prepared (preprocessed, float) sample as the tensor the model takes: quantized for integer inputs."""
    array = np.asarray(feed, dtype=np.float32)
    scale, zero_point = quantization
    if scale and np.dtype(dtype).kind in "iu" and array.dtype.kind == "f":
        info = np.iinfo(dtype)
        array = np.clip(np.round(array / scale + zero_point), info.min, info.max)
    return array.astype(dtype)


def serve(config: dict) -> tuple:
    """Import and load the server; return (request callable, phases in ms) once it can answer."""
    kind = config["kind"]
    phases = {}
    if kind == "handler":
        import handler  # imports numpy and the runtime, then loads the model

        phases["import_and_load_ms"] = (time.perf_counter() - _T0) * 1000
        event = config["event"]
        return (lambda: handler.handler(event, None)), phases, handler
    if kind == "keras":
        import numpy as np
        import tensorflow  # noqa: F401 (timed apart from the model load)
        import tf_keras

        phases["import_ms"] = (time.perf_counter() - _T0) * 1000
        model = tf_keras.models.load_model(config["model_path"], compile=False)
        phases["load_ms"] = (time.perf_counter() - _T0) * 1000 - phases["import_ms"]
        x = np.asarray(config["feeds"][0], dtype=model.inputs[0].dtype.as_numpy_dtype)
        return (lambda: model.predict(x, verbose=0)), phases, (model, x)
    if kind == "floor":
        import numpy  # noqa: F401

        runner = raw_runner(config["format"], config["model_path"], config["feeds"])
        phases["import_and_load_ms"] = (time.perf_counter() - _T0) * 1000
        return runner, phases, None
    raise SystemExit(f"unknown worker kind {kind!r}")


def main(config: dict) -> dict:
    sys.path[:0] = config.get("paths", [])
    for folder in config.get("site_dirs", []):
        site.addsitedir(folder)
    if config.get("cwd"):
        os.chdir(config["cwd"])
    request, phases, server = serve(config)
    first_start = time.perf_counter()
    response = request()
    first_done = time.time()
    if config["kind"] == "handler" and (not isinstance(response, dict) or "predictions" not in response):
        raise SystemExit(f"the handler did not answer with predictions: {json.dumps(response)[:500]}")
    result = {"started": STARTED, "first_result": first_done, "first_request_ms": (time.perf_counter() - first_start)
              * 1000, "phases": phases, "rss_first_mb": peak_rss_mb()}
    if config.get("throughput"):
        print("READY", flush=True)
        sys.stdin.readline()
        begin = time.time()
        for _ in range(config["throughput"]):
            request()
        result.update(begin=begin, end=time.time(), requests=config["throughput"])
        return result
    warmup, count = config.get("warmup", 0), config.get("requests", 0)
    timed(request, warmup)
    result["warm_ms"] = timed(request, count)
    if config["kind"] == "keras":
        model, x = server
        timed(lambda: model(x, training=False), warmup)
        result["call_ms"] = timed(lambda: model(x, training=False), count)
    # Memory and imports of the server itself, before the raw interpreter below adds its own.
    result["peak_rss_mb"] = peak_rss_mb()
    result["modules"] = sorted({name.split(".")[0] for name in sys.modules})
    if config.get("raw") and count:
        runner = raw_runner(config["format"], config["model_path"], config["feeds"])
        timed(runner, warmup)
        result["raw_ms"] = timed(runner, count)
    return result


if __name__ == "__main__":
    outcome = main(json.loads(sys.argv[1]))
    sys.stdout.write(MARKER + json.dumps(outcome) + "\n")
    sys.stdout.flush()
