"""Cold start of the packaged Lambda handler against TensorFlow and the floor, and the layer layout's sizes.

A thin view over `edgemaas.bench` (the machinery behind `edgemaas bench` and benchmarks/bench.py): the same fresh,
isolated processes, interleaved in one run, with only the cold-start servers: the packaged handler (as shipped, and
with its Python precompiled), TensorFlow serving the Keras model, and the floor (numpy + LiteRT invoking an identity
model). Each model is compressed into --workdir first (float32 and full int8 TFLite, gated), so this runs from a fresh
clone. It also packages each model in the layer layout and checks the function zip (goal <= 1 MB) and the runtime
layer (goal <= 40 MB).

    python benchmarks/cold_start.py [--models cnn nlp] [--runs 5] [--workdir build/bench-cold-start] [--json F]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

COLD_SERVERS = ("tensorflow", "handler", "handler-bytecode", "floor-litert")
ZIP_GOAL, LAYER_GOAL = 1 << 20, 40 << 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["linear", "cnn", "rnn", "nlp"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench-cold-start"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from edgemaas.bench import run_bench
    from edgemaas.bench.report import heading, ms, size
    from edgemaas.fsutil import atomic_write_json
    from edgemaas.packaging.awslambda.lambda_zip import package_lambda
    from edgemaas.pipeline import chosen_variant, compress_spec
    from edgemaas.spec import load_spec
    from edgemaas.workspace import Workspace

    ws = Workspace(args.workdir.resolve())
    sizes = {}
    for name in args.models:
        spec = load_spec(REPO / "models" / f"{name}.yaml")
        spec.compress.variants = ["tflite-float32", "tflite-int8"]
        compress_spec(spec, ws)
        layered = package_lambda(chosen_variant(ws, name), ws.lambda_dir(name), ws.cache(), layout="layer",
                                 layers_dir=ws.dist / "layers")
        sizes[name] = (layered.zipped_bytes, layered.layer["zipped_bytes"])
    result = run_bench(args.models, ws, cold_runs=args.runs, warm_requests=args.runs, throughput_requests=1,
                       only=COLD_SERVERS,
                       report=lambda message: print(f"  {message}", file=sys.stderr, flush=True))

    def cold(model: str | None, server: str) -> float | None:
        found = result.server(model, server)
        return found.cold_start_median_ms if found and found.measured else None

    floor = cold(None, "floor-litert")
    header = ["model", "edgemaas handler", "handler + .pyc", "TensorFlow (Keras)", "edgemaas / TF (goal ≤ 0.05)",
              "floor", "edgemaas / floor (goal ≤ 1.5)", "function zip, layer layout (goal ≤ 1 MB)",
              "runtime layer (goal ≤ 40 MB)"]
    rows = []
    for name in args.models:
        handler, tensorflow = cold(name, "handler"), cold(name, "tensorflow")
        vs_tf = handler / tensorflow if handler and tensorflow else None
        vs_floor = handler / floor if handler and floor else None
        function_zip, layer = sizes[name]
        rows.append([name, ms(handler), ms(cold(name, "handler-bytecode")), ms(tensorflow), _goal(vs_tf, 0.05),
                     ms(floor), _goal(vs_floor, 1.5), f"{size(function_zip)} ({_met(function_zip <= ZIP_GOAL)})",
                     f"{size(layer)} ({_met(layer <= LAYER_GOAL)})"])
    print(heading(result) + "\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))
    if args.json:
        atomic_write_json(args.json, {**result.to_dict(), "layer_layout_sizes": sizes})
    return 0


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _goal(ratio: float | None, target: float) -> str:
    return "–" if ratio is None else f"{ratio:.3f} ({_met(ratio <= target)})"


if __name__ == "__main__":
    raise SystemExit(main())
