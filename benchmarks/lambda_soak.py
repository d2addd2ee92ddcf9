"""Soak test of a packaged Lambda function through the local Lambda emulation: many sequential invokes in one
execution environment, and its Max Memory Used over time.

The function zip (built from the model's gate-chosen variant, or --package) runs under the real awslambdaric
(`edgemaas.lambda_local.invoke_local`), which reports Max Memory Used per invoke, as Lambda's REPORT line does.
The events cycle through direct invokes, HTTP API v2 events and bad requests; each answer must equal what the
runtime in this process answers (predictions, or the 4xx error record); numbers may differ by a few units in the
last printed digit, because the package may ship another LiteRT or ONNX Runtime release than this process has (Amazon
Linux 2 gets ai-edge-litert 1.4.0; see edgemaas/packaging/common/matrix.py). Warm-up is the first 10% of the invokes;
growth is Max Memory Used after the last invoke minus after warm-up. The same events also go to an echo function
(a one-line handler) as a baseline: what the runtime client and interpreter grow by themselves. Prints a Markdown
table; exits 1 on errors.

    python benchmarks/lambda_soak.py [--model cnn] [--workspace .] [--package function.zip] [--invokes 1000]
                                     [--memory-mb 512] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WARMUP_SHARE = 0.10
_SHOWN_ERRORS = 5
# Answers are printed to 6 decimals; two releases of one runtime may round a value near a boundary differently.
NUMBER_TOLERANCE = 1e-5


def same_answer(expected: Any, got: Any, tolerance: float = NUMBER_TOLERANCE) -> bool:
    """Equal JSON values, except that numbers (not booleans) may differ by `tolerance`."""
    if isinstance(expected, dict):
        return isinstance(got, dict) and expected.keys() == got.keys() and all(
            same_answer(expected[k], got[k], tolerance) for k in expected)
    if isinstance(expected, list):
        return isinstance(got, list) and len(expected) == len(got) and all(
            same_answer(e, g, tolerance) for e, g in zip(expected, got))
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(expected) is type(got) and expected == got
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        return abs(expected - got) <= tolerance
    return expected == got


@dataclass
class SoakResult:
    model: str
    variant: str
    invokes: int
    cold_starts: int  # 1: every invoke ran in the same execution environment
    errors: int
    error_examples: list[str]
    seconds: float
    duration_ms: dict[str, float]  # p50, p99, max of the invokes' Duration
    init_duration_ms: float | None
    memory_size_mb: int
    max_memory_mb_after_warmup: int
    max_memory_mb_end: int
    max_memory_growth_mb: int
    max_memory_mb: list[int]  # per invoke
    baseline_growth_mb: int | None = None  # an echo function's growth under the same events


def soak_events(samples: list[Any], invokes: int) -> list[Any]:
    """Direct invokes, HTTP API v2 events (plain and base64) and bad requests, in a fixed cycle."""
    import base64

    def http(body: str, encoded: bool = False) -> dict[str, Any]:
        if encoded:
            body = base64.b64encode(body.encode()).decode()
        return {"version": "2.0", "routeKey": "$default", "rawPath": "/", "isBase64Encoded": encoded,
                "requestContext": {"http": {"method": "POST", "path": "/"}}, "headers": {}, "body": body}

    events = []
    for i in range(invokes):
        sample = samples[i % len(samples)]
        kind = i % 8
        if kind in (0, 1, 2):
            events.append({"inputs": [sample]})
        elif kind in (3, 4):
            events.append(http(json.dumps({"inputs": [sample, sample]})))
        elif kind == 5:
            events.append(http(json.dumps({"inputs": [sample]}), encoded=True))
        elif kind == 6:
            events.append({"inputs": [], "extra": i})  # two mistakes: the first found is reported
        else:
            events.append(http('{"inputs": [' + json.dumps(sample)[:-2] + "}"))  # malformed JSON
    return events


def expected_answer(service: Any, event: Any) -> Any:
    """What the handler must return for `event`, from the runtime in this process."""
    if "requestContext" in event:
        reply = service.handle_body(event["body"], event["isBase64Encoded"])
        return {"statusCode": reply.status, "body": reply.body}
    return service.handle_request(event).body


def model_from_zip(package: Path, into: Path) -> Path:
    """The package's own model/ folder, so expectations come from exactly the model it ships."""
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            if name.startswith("model/") and not name.endswith("/"):
                (into / Path(name).name).write_bytes(archive.read(name))
    return into


ECHO_HANDLER = "def handler(event, context):\n    return {\"echo\": event}\n"


def memory_growth(memory: list[int]) -> tuple[int, int]:
    """(Max Memory Used after warm-up, growth from there to the last invoke)."""
    warm = memory[max(0, int(len(memory) * WARMUP_SHARE) - 1)]
    return warm, memory[-1] - warm


def run_soak(package: Path, samples: list[Any], invokes: int = 1000, memory_mb: int = 512, baseline: bool = True,
             report: Any = lambda message: None) -> SoakResult:
    from edgemaas.local import invoke_local
    from edgemaas.runtime import load_model
    from edgemaas.runtime.service import Service

    with tempfile.TemporaryDirectory(prefix="edgemaas-soak-") as tmp:
        service = Service(load_model(model_from_zip(package, Path(tmp))))
    manifest = service.model.manifest
    events = soak_events(samples, invokes)
    report(f"{invokes} invokes of {package} ({manifest.name} {manifest.variant}) in one execution environment")
    began = time.perf_counter()
    results = invoke_local(package, events, memory_mb=memory_mb, timeout_s=30)
    seconds = time.perf_counter() - began

    errors, examples = 0, []
    for i, (event, result) in enumerate(zip(events, results)):
        problem = None
        if result.function_error:
            problem = f"invoke {i}: {result.error_message}"
        else:
            expected = expected_answer(service, event)
            got = result.payload
            if "statusCode" in expected:
                got = {"statusCode": got.get("statusCode"), "body": json.loads(got.get("body", "null"))}
            if not same_answer(expected, got):
                problem = f"invoke {i}: expected {json.dumps(expected)[:150]}, got {json.dumps(got)[:150]}"
        if problem:
            errors += 1
            if len(examples) < _SHOWN_ERRORS:
                examples.append(problem)
    cold = sum(1 for r in results if r.init_duration_ms is not None)
    memory = [r.max_memory_used_mb for r in results]
    warm, growth = memory_growth(memory)
    baseline_growth = None
    if baseline:
        with tempfile.TemporaryDirectory(prefix="edgemaas-soak-echo-") as echo:
            (Path(echo) / "handler.py").write_text(ECHO_HANDLER)
            echoed = invoke_local(Path(echo), events, memory_mb=memory_mb, timeout_s=30)
        baseline_growth = memory_growth([r.max_memory_used_mb for r in echoed])[1]
    durations = [r.duration_ms for r in results[1:]] or [results[0].duration_ms]  # warm invokes
    quantiles = statistics.quantiles(durations, n=100, method="inclusive")
    return SoakResult(
        model=manifest.name, variant=manifest.variant, invokes=len(results), cold_starts=cold, errors=errors,
        error_examples=examples, seconds=round(seconds, 2),
        duration_ms={"p50": round(quantiles[49], 2), "p99": round(quantiles[98], 2), "max": round(max(durations), 2)},
        init_duration_ms=round(results[0].init_duration_ms, 1) if results[0].init_duration_ms else None,
        memory_size_mb=memory_mb, max_memory_mb_after_warmup=warm, max_memory_mb_end=memory[-1],
        max_memory_growth_mb=growth, max_memory_mb=memory, baseline_growth_mb=baseline_growth,
    )


def markdown(result: SoakResult) -> str:
    d = result.duration_ms
    rows = [
        ("model", f"{result.model} ({result.variant})"),
        ("invokes (cold starts)", f"{result.invokes} ({result.cold_starts})"),
        ("errors", str(result.errors)),
        ("wall time", f"{result.seconds:.1f} s"),
        ("init duration", f"{result.init_duration_ms} ms"),
        ("warm duration p50 / p99 / max", f"{d['p50']:.2f} / {d['p99']:.2f} / {d['max']:.2f} ms"),
        ("Max Memory Used after warm-up (first 10%)",
         f"{result.max_memory_mb_after_warmup} MB of {result.memory_size_mb} MB"),
        ("Max Memory Used at the end", f"{result.max_memory_mb_end} MB (growth {result.max_memory_growth_mb:+d} MB)"),
    ]
    if result.baseline_growth_mb is not None:
        rows.append(("an echo function's growth, same events", f"{result.baseline_growth_mb:+d} MB"))
    return "\n".join(["| measure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn", help="a model built in --workspace (default cnn)")
    parser.add_argument("--workspace", default=str(REPO), help="workspace root, holding build/ (default: the repo)")
    parser.add_argument("--package", type=Path, help="a function zip to soak (default: package --model's chosen "
                        "variant into a temporary folder)")
    parser.add_argument("--invokes", type=int, default=1000)
    parser.add_argument("--memory-mb", type=int, default=512)
    parser.add_argument("--no-baseline", action="store_true", help="skip the echo function's run")
    parser.add_argument("--json", type=Path, help="also write the result (with every invoke's memory) here")
    args = parser.parse_args(argv)
    if args.invokes < 10:
        parser.error("--invokes must be at least 10")

    import numpy as np

    from edgemaas.errors import UserError
    from edgemaas.fsutil import atomic_write_json
    from edgemaas.packaging.awslambda.lambda_zip import package_lambda
    from edgemaas.pipeline import chosen_variant
    from edgemaas.workspace import Workspace

    ws = Workspace(Path(args.workspace).resolve())
    try:
        with np.load(ws.data_file(args.model)) as data:
            samples = [x.tolist() for x in data["x_test"][:64]]
    except FileNotFoundError:
        raise SystemExit(f"no held-out data for {args.model} in {ws.root}: build it with `./dev.sh build`") from None
    with tempfile.TemporaryDirectory(prefix="edgemaas-soak-package-") as tmp:
        package = args.package
        if package is None:
            try:
                package = Path(package_lambda(chosen_variant(ws, args.model), Path(tmp), ws.cache()).zip_path)
            except UserError as exc:
                raise SystemExit(str(exc)) from None
        result = run_soak(package, samples, args.invokes, args.memory_mb, not args.no_baseline,
                          report=lambda message: print(message, file=sys.stderr, flush=True))
    if args.json:
        atomic_write_json(args.json, asdict(result))
    print(markdown(result))
    for example in result.error_examples:
        print(f"error: {example}", file=sys.stderr)
    return 1 if result.errors or result.cold_starts != 1 else 0


if __name__ == "__main__":
    raise SystemExit(main())
