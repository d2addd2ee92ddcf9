"""Cold start of the packaged Lambda handler, side by side with what users deploy today, in one run.

For each built-in model, a fresh process to the first response, median of --runs:
- edgemaas: the packaged handler (layer layout: the function zip on the path, the runtime layer as /opt/python);
- tensorflow: the same model served from a TensorFlow SavedModel by a handler that imports TensorFlow;
- floor: a fresh process that imports numpy and LiteRT and invokes an identity model.
All three are started the same way, timed from just before the process starts to its first result (`python -S` with only their code on sys.path, plus the development
environment's site-packages for TensorFlow, which no package carries).
It also prints the function-zip and runtime-layer sizes. Ratios are computed from one run on one machine.

    python benchmarks/cold_start.py [--models cnn nlp] [--runs 5] [--workdir build/bench-cold-start]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Each probe prints one JSON line: seconds from interpreter start (time.perf_counter is process-relative on Linux,
# so the start is read from /proc) to the first result.
# Each probe prints one JSON line when its first result is ready: the wall-clock time (the parent notes the time
# just before it starts the process) and its peak RSS.
PROBE = r"""
import os, sys, time, json
BODY
print(json.dumps({"done": time.time(), "rss_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024}))
"""

EDGEMAAS = """
import handler
response = handler.handler(EVENT, None)
assert "predictions" in response, response
"""

TENSORFLOW = """
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(SAVED_MODEL)
serve = model.signatures["serving_default"]
name, spec = next(iter(serve.structured_input_signature[1].items()))
result = serve(**{name: tf.cast(tf.constant(np.asarray(EVENT["inputs"])), spec.dtype)})
"""

FLOOR = """
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=IDENTITY)
interpreter.allocate_tensors()
detail = interpreter.get_input_details()[0]
interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
interpreter.invoke()
"""


def measure(body: str, paths: list[str], runs: int, **constants: object) -> dict[str, float]:
    script = PROBE.replace("BODY", "".join(f"{k} = {v!r}\n" for k, v in constants.items()) + body)
    seconds, rss = [], []
    for _ in range(runs):
        started = time.time()
        done = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True,
                              env={"PYTHONPATH": ":".join(paths), "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
                              cwd=paths[0], timeout=300)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        seconds.append(result["done"] - started)
        rss.append(result["rss_mb"])
    return {"median_ms": statistics.median(seconds) * 1000, "runs": runs, "peak_rss_mb": max(rss)}


def identity_tflite(path: Path) -> Path:
    from edgemaas.tf import tensorflow

    tf = tensorflow()
    function = tf.function(lambda x: tf.identity(x)).get_concrete_function(tf.TensorSpec([1, 4], tf.float32))
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([function]).convert())
    return path


def saved_model(keras_path: Path, out: Path) -> Path:
    from edgemaas.passes.tfmot_passes import load_keras

    load_keras(str(keras_path)).export(str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["linear", "cnn", "rnn", "nlp"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench-cold-start"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from edgemaas.pipeline import compress_spec, chosen_variant
    from edgemaas.packaging.lambda_zip import package_lambda
    from edgemaas.spec import load_spec
    from edgemaas.workspace import Workspace

    console = Console(width=160)
    ws = Workspace(args.workdir.resolve())
    site_packages = sysconfig.get_paths()["purelib"]
    scratch = Path(tempfile.mkdtemp(prefix="edgemaas-cold-"))
    results = []
    layer_dir = None
    for name in args.models:
        spec = load_spec(REPO / "models" / f"{name}.yaml")
        spec.compress.variants = ["tflite-float32", "tflite-int8"]
        compress_spec(spec, ws)
        package = package_lambda(chosen_variant(ws, name), ws.lambda_dir(name), ws.cache(), layout="layer",
                                 layers_dir=ws.dist / "layers")
        function_dir = scratch / name
        with zipfile.ZipFile(package.zip_path) as archive:
            archive.extractall(function_dir)
        if layer_dir is None:
            layer_dir = scratch / "opt"
            with zipfile.ZipFile(package.layer["zip_path"]) as archive:
                archive.extractall(layer_dir)
        event = {"inputs": _first_inputs(ws, name)}
        edgemaas = measure(EDGEMAAS, [str(function_dir), str(layer_dir / "python")], args.runs, EVENT=event)
        tf_dir = saved_model(ws.variant_dir(name, "keras-float32") / "model.keras", scratch / f"{name}-savedmodel")
        tf_event = {"inputs": _preprocessed(ws, name)}
        tensorflow = measure(TENSORFLOW, [str(scratch), site_packages], args.runs, EVENT=tf_event,
                             SAVED_MODEL=str(tf_dir))
        results.append({"model": name, "variant": package.variant, "edgemaas": edgemaas, "tensorflow": tensorflow,
                        "function_zip_bytes": package.zipped_bytes, "layer_zip_bytes": package.layer["zipped_bytes"]})
    floor = measure(FLOOR, [str(layer_dir / "python")], args.runs, IDENTITY=str(identity_tflite(scratch / "id.tflite")))

    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores"
    console.print(f"cold start, fresh process to first response, median of {args.runs}; "
                  f"{datetime.now(timezone.utc):%Y-%m-%d}; {machine}; Python {platform.python_version()}")
    table = Table()
    for column in ("model", "edgemaas handler", "TensorFlow SavedModel", "edgemaas / TF (goal ≤ 0.05)",
                   "floor", "edgemaas / floor (goal ≤ 1.5)", "function zip (goal ≤ 1 MB)", "runtime layer"):
        table.add_column(column)
    rows_md = []
    for r in results:
        vs_tf = r["edgemaas"]["median_ms"] / r["tensorflow"]["median_ms"]
        vs_floor = r["edgemaas"]["median_ms"] / floor["median_ms"]
        r.update(vs_tensorflow=vs_tf, vs_floor=vs_floor)
        cells = [r["model"], f"{r['edgemaas']['median_ms']:.0f} ms", f"{r['tensorflow']['median_ms']:.0f} ms",
                 f"{vs_tf:.3f} ({'met' if vs_tf <= 0.05 else 'MISSED'})", f"{floor['median_ms']:.0f} ms",
                 f"{vs_floor:.2f} ({'met' if vs_floor <= 1.5 else 'MISSED'})",
                 f"{r['function_zip_bytes'] / 1024:.1f} KB ({'met' if r['function_zip_bytes'] <= 1 << 20 else 'MISSED'})",
                 f"{r['layer_zip_bytes'] / (1 << 20):.1f} MB ({'met' if r['layer_zip_bytes'] <= 40 << 20 else 'MISSED'})"]
        table.add_row(*cells)
        rows_md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    print("\n| " + " | ".join(c.header for c in table.columns) + " |\n|" + "---|" * len(table.columns))
    print("\n".join(rows_md))
    if args.json:
        args.json.write_text(json.dumps({"floor": floor, "results": results, "machine": machine}, indent=2))
    return 0


def _first_inputs(ws, name: str) -> list:
    import numpy as np

    with np.load(ws.data_file(name)) as data:
        return data["x_test"][:1].tolist()


def _preprocessed(ws, name: str) -> list:
    import numpy as np

    from edgemaas.runtime import read_manifest
    from edgemaas.runtime.processing import InputProcessor

    manifest = read_manifest(ws.variant_dir(name, "keras-float32"))
    with np.load(ws.data_file(name)) as data:
        return InputProcessor(manifest.preprocessing[0], manifest.limits).transform(data["x_test"][:1]).tolist()


if __name__ == "__main__":
    raise SystemExit(main())
