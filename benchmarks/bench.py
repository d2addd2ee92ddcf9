"""Side-by-side benchmark of every way to serve the built models (what `edgemaas bench` runs).

For each model: TensorFlow (Keras), LiteRT float32 / dynamic int8 / full int8, ONNX Runtime float32 / dynamic int8 /
static QDQ int8 (each served by our handler), and the packaged Lambda handler; plus the floor of each runtime. Cold
start (fresh process to first result), warm p50/p99 over single requests, the raw invoke, throughput with 2
workers, peak RSS and sizes, all in one run; then the goals, each met or missed. Writes bench.json, bench.md and
PNG plots to --out and prints the Markdown the README carries.

    .venv/bin/python benchmarks/bench.py [NAME ...] [--workspace .] [--cold-runs 5] [--warm-requests 1000]
                                         [--out dist/bench]

Models must be built first (`edgemaas build`, or `edgemaas compress NAME` for every variant).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    from edgemaas.bench import readme_table, run_bench, write_results
    from edgemaas.errors import UserError
    from edgemaas.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="built models (default: each with a build/<name>/selection.json)")
    parser.add_argument("--workspace", type=Path, default=Path("."), help="the folder holding build/ and dist/")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--warm-requests", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="where results go (default: WORKSPACE/dist/bench)")
    args = parser.parse_args(argv)

    ws = Workspace(args.workspace.resolve())
    names = args.names or sorted(p.parent.name for p in ws.build.glob("*/selection.json"))
    try:
        if not names:
            raise UserError(f"no built models in {ws.build}; run `edgemaas build` first")
        result = run_bench(names, ws, cold_runs=args.cold_runs, warm_requests=args.warm_requests,
                           report=lambda message: print(f"  {message}", file=sys.stderr, flush=True))
        written = write_results(result, args.out or ws.dist / "bench")
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(readme_table(result))
    print("written: " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
