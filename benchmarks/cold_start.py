"""Cold start of the packaged Lambda handler against TensorFlow and the floor, and the layer layout's sizes.

A thin view over `edgemaas.bench` (the machinery behind `edgemaas bench` and benchmarks/bench.py): the same fresh,
isolated processes, interleaved in one run, with only the cold-start servers: the packaged handler (as shipped, and
with its Python precompiled), TensorFlow serving the Keras model, and the floor (numpy + LiteRT invoking an identity
model). Each model is compressed into --workdir first (float32 and full int8 TFLite, gated), so this runs from a fresh
clone. It also packages each model in the layer layout and checks the function zip (goal <= 1 MB) and the runtime
layer (goal <= 40 MB).

A second table (issue 14) sets the Amazon Linux 2 runtime (python3.10/3.11: ai-edge-litert 1.4.0 + numpy 1.26.4, the
wheels whose ELF files need glibc <= 2.26) beside the Amazon Linux 2023 one (ai-edge-litert and numpy as installed
here): the same shipped edgemaas/runtime in a fresh `python -S -s` whose path holds only those wheels, built for this
machine's Python, runs interleaved: import + model load + first answer (median), and the runtime's size (slimmed as
packaged; zipped at level 6).

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
    parser.add_argument("--runtimes-only", action="store_true", help="only the AL2 vs AL2023 runtime table")
    args = parser.parse_args(argv)
    if args.runtimes_only:
        print(runtime_table(args.models, args.runs, args.workdir.resolve()))
        return 0

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
    print("\n" + runtime_table(args.models, args.runs, args.workdir.resolve()))
    if args.json:
        atomic_write_json(args.json, {**result.to_dict(), "layer_layout_sizes": sizes})
    return 0


_PROBE = r"""
import sys, time
started = time.perf_counter()
import numpy as np
from edgemaas.runtime import load_model
model = load_model(sys.argv[1], num_threads=1)
with np.load(sys.argv[2], allow_pickle=False) as data:
    sample = data["x_test"][:1]
model.predict(sample.tolist())
print((time.perf_counter() - started) * 1000, model.backend.name, np.__version__)
"""


def runtime_table(models: list[str], runs: int, workdir: Path) -> str:
    """Markdown: cold start and size of the AL2 runtime (python3.10/3.11) beside the AL2023 one, per model."""
    import os
    import statistics
    import subprocess
    import tempfile
    import zlib

    from edgemaas.packaging.awslambda.lambda_zip import slim
    from edgemaas.packaging.awslambda.loadcheck import host_arch, host_python
    from edgemaas.packaging.common import dependencies
    from edgemaas.packaging.common.inputs import tree
    from edgemaas.packaging.common.matrix import plan
    from edgemaas.pipeline import chosen_variant
    from edgemaas.workspace import Workspace

    ws = Workspace(workdir)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    sets = {"Amazon Linux 2 (python3.10/3.11)": list(plan("3.11", "x86_64", "tflite").requirements),
            "Amazon Linux 2023 (python3.12/3.13)": list(plan("3.12", "x86_64", "tflite").requirements)}
    installed = {label: dependencies.install(reqs, host_python(), host_arch(), ws.cache())
                 for label, reqs in sets.items()}
    sizes = {}
    for label, deps in installed.items():
        files = [path for _, path in slim(tree(deps, ""))]
        sizes[label] = (sum(len(zlib.compress(p.read_bytes(), 6)) for p in files), sum(p.stat().st_size
                                                                                       for p in files))
    rows = []
    with tempfile.TemporaryDirectory() as code:
        (Path(code) / "edgemaas").mkdir()
        (Path(code) / "edgemaas" / "__init__.py").write_text("")
        import shutil

        shutil.copytree(REPO / "edgemaas" / "runtime", Path(code) / "edgemaas" / "runtime",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name in models:
            variant = chosen_variant(ws, name)
            timings: dict[str, list[float]] = {label: [] for label in sets}
            backend: dict[str, str] = {}
            for _ in range(runs):  # interleaved: machine noise hits both alike
                for label, deps in installed.items():
                    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
                    env["PYTHONPATH"] = os.pathsep.join([code, str(deps)])
                    done = subprocess.run([sys.executable, "-S", "-s", "-c", _PROBE, str(variant),
                                           str(ws.data_file(name))], capture_output=True, text=True, env=env,
                                          check=True)
                    cold_ms, runtime, numpy_version = done.stdout.split()[-3:]
                    timings[label].append(float(cold_ms))
                    backend[label] = f"{runtime} ({', '.join(sets[label])})"
            for label in sets:
                zipped, unzipped = sizes[label]
                rows.append(f"| {name} ({variant.name}) | {label} | {backend[label]} | "
                            f"{statistics.median(timings[label]):.0f} ms | {zipped / 2**20:.1f} MB | "
                            f"{unzipped / 2**20:.1f} MB |")
    header = ("| model | Lambda OS | runtime (wheels) | cold start: import + load + first answer (median of "
              f"{runs}) | runtime zipped | unzipped |\n|---|---|---|---|---|---|")
    return _when_and_where(load_before) + "\n\n" + header + "\n" + "\n".join(rows)


def _when_and_where(load_before: str) -> str:
    """Date, CPU, Python and the load average before and after: what a reader needs to weigh the numbers."""
    import datetime
    import os
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu} ({os.cpu_count()} "
            f"cores), this machine's Python {platform.python_version()} build of each release; load average "
            f"{load_before} before, {load_after} after.")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _goal(ratio: float | None, target: float) -> str:
    return "–" if ratio is None else f"{ratio:.3f} ({_met(ratio <= target)})"


if __name__ == "__main__":
    raise SystemExit(main())
