"""Our edge server against BentoML, LitServe, Seldon MLServer and KServe, side by side in one run (issue 16).

Same model files, same runtime code, each peer in its own venv under build/peers/ (made on first use), set up as its
docs set up a custom model (benchmarks/peers/), batching on and off; one load generator in its own process over
keep-alive HTTP on 127.0.0.1 at concurrency 1, 8 and 32. Writes dist/bench/serving.json, serving.md, serving.png.

    .venv/bin/python benchmarks/serving_peers.py                      # every built model + the MobileNetV2-style one
    .venv/bin/python benchmarks/serving_peers.py --small --servers edgemaas litserve   # CI: a minute or two
    edgemaas bench --serving                                           # the same, from the CLI

The built-ins must be built first (`edgemaas build`); the workspace is --workspace or the current directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgemaas.bench.serving import SERVER_IDS
from edgemaas.bench.serving_report import write_serving
from edgemaas.bench.serving_run import CONCURRENCIES, DEFAULT_MODELS, run_serving
from edgemaas.errors import UserError
from edgemaas.workspace import Workspace

SMALL = {"requests": 100, "warmup": 10, "models": ["cnn"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None, help="workspace root (default: the current one)")
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"models (default {' '.join(DEFAULT_MODELS)}; `cnn-onnx`: a built-in's ONNX variant)")
    parser.add_argument("--servers", nargs="+", default=None, choices=SERVER_IDS, help="servers (default all)")
    parser.add_argument("--concurrency", nargs="+", type=int, default=list(CONCURRENCIES))
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per row (default 1000)")
    parser.add_argument("--warmup", type=int, default=100, help="uncounted requests first (default 100)")
    parser.add_argument("--small", action="store_true", help="CI mode: cnn only, 100 requests per row")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <workspace>/dist/bench)")
    args = parser.parse_args(argv)
    if args.small:
        args.requests, args.warmup = SMALL["requests"], SMALL["warmup"]
        args.models = args.models or SMALL["models"]
    ws = Workspace(args.workspace or Path("."))
    try:
        result = run_serving(ws, models=args.models or list(DEFAULT_MODELS), servers=args.servers,
                             concurrencies=args.concurrency, requests=args.requests, warmup=args.warmup,
                             report=lambda message: print(message, file=sys.stderr, flush=True))
        written = write_serving(result, args.out or ws.dist / "bench")
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print((args.out or ws.dist / "bench").joinpath("serving.md").read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
