"""`python -m <name>_edge predict|serve|describe`: the edge bundle's command line (argparse: stdlib only).

    python -m cnn_edge predict --input request.json      # {"inputs": [...]} in, predictions JSON out
    python -m cnn_edge predict --input - < request.json  # the same from stdin
    python -m cnn_edge serve --port 8080                 # JSON HTTP API on 127.0.0.1 (--host 0.0.0.0: every
                                                          # interface; put it behind a firewall or a proxy)
    python -m cnn_edge describe                          # what a request must look like

A bad request prints `Error: <message>` (the message the HTTP API and the Lambda handler give) and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import resource
import sys
from pathlib import Path

from ..runtime import ModelLoadError, load_model
from ..runtime.model import ServingModel
from ..runtime.service import MAX_BODY_BYTES, Service
from .batching import Batcher, batchable
from .limits import MB, MemoryPlan, current_rss, request_bytes_for, request_bytes_needed
from .server import ServerSettings, serve

DEFAULT_MEMORY_BUDGET_MB = 512  # half of a 1 GB board: the OS and the rest of the device keep the other half

DEFAULT_MAX_BATCH = 32  # samples run as one interpreter call
# ...fewer for large samples: each replica's tensor arena grows with the batch (a 32x32x3 image network: 0.6 MB a
# sample, 19 MB at 32), while the time per sample stays the same (0.23 ms at 1, 4 or 32 on an EPYC core). The default
# halves the batch until its input holds at most this many values: 32 for the built-ins, 4 for a 32x32x3 image.
BATCH_INPUT_VALUES = 16384
DEFAULT_MAX_WAIT_MS = 2.0  # a batch waits this long at most, and only while more requests are being prepared

GC_THRESHOLD = 50_000  # allocations between collections of the young generation (Python's default: 700)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "model"  # <name>_edge/model inside a bundle


class CliError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(message)s",
                        level=logging.INFO if args.command == "serve" else logging.WARNING)
    # The access line already says a request was refused; the service's own line per rejection would double it.
    logging.getLogger("edgemaas.service").setLevel(logging.WARNING)
    if args.command == "serve" and args.quiet:
        logging.getLogger("edgemaas.access").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except (CliError, ModelLoadError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _predict(args: argparse.Namespace) -> int:
    service = Service(_load(args.model_dir, args.threads), max_body_bytes=args.max_request_bytes)
    reply = service.handle_body(_read_input(args.input, args.max_request_bytes))
    if not reply.ok:
        raise CliError(reply.error_message)
    print(reply.text)
    return 0


# Below this a fitted request limit would refuse ordinary requests: the budget error is the better answer then.
MIN_FITTED_REQUEST_BYTES = 1 * MB


def _default_request_bytes(model: ServingModel) -> int:
    """What the model's largest legal request needs: per sample for the batch form; for a model taking named tensors
    (open shapes, e.g. [N, 3, H, W]) from its element limit (limits.max_input_elements)."""
    description = model.describe()
    if "tensors" in description.get("forms", []):
        return request_bytes_for(model.max_request_numbers())
    return request_bytes_needed(description)


def _serve(args: argparse.Namespace) -> int:
    models = [_load(args.model_dir, args.threads) for _ in range(args.workers)]
    max_request_bytes = args.max_request_bytes or _default_request_bytes(models[0])
    settings = ServerSettings(host=args.host, port=args.port, max_connections=args.max_connections,
                              max_per_client=_per_client(args.max_connections, args.max_connections_per_client),
                              read_timeout_s=args.read_timeout, head_timeout_s=args.head_timeout,
                              body_timeout_s=args.body_timeout, min_body_rate=int(args.min_body_rate_kb * 1024),
                              queue_timeout_s=args.queue_timeout, access_log=not args.quiet)
    plan = MemoryPlan(budget=args.memory_budget_mb * MB, base=current_rss(), connections=args.max_connections,
                      max_head_bytes=settings.max_head_bytes, workers=args.workers,
                      max_request_bytes=max_request_bytes)
    if plan.problem() and not args.max_request_bytes and plan.largest_request_bytes() >= MIN_FITTED_REQUEST_BYTES:
        # A model with open shapes may take more than a small board holds: serve what the budget holds and say so.
        fitted = plan.largest_request_bytes()
        logging.getLogger("edgemaas.serve").warning(
            "requests are limited to %d bytes to fit --memory-budget-mb %d (this model's largest legal request is "
            "%d bytes): raise --memory-budget-mb, or set --max-request-bytes", fitted, args.memory_budget_mb,
            max_request_bytes)
        max_request_bytes = fitted
        plan = dataclasses.replace(plan, max_request_bytes=fitted)
    service = Service(models, max_body_bytes=max_request_bytes, borrow_timeout_s=args.read_timeout)
    problem = plan.problem()
    if problem:
        raise CliError(problem)
    settings.body_budget_bytes = plan.body_budget
    _raise_open_files_limit()
    _tune_gc()
    batcher = _batcher(args, models, max_request_bytes)
    try:
        return serve(service, settings, batcher)
    except OSError as exc:  # port in use, host not on this machine, no permission for a port below 1024
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None


def _batcher(args: argparse.Namespace, models: list, max_request_bytes: int) -> Batcher | None:
    """Micro-batching (batches of one for a model whose batch is fixed); None with --max-batch 1: then the threaded
    server and its gate serve every request, as before batching."""
    max_batch = args.max_batch or default_max_batch(models[0])
    if max_batch <= 1:
        return None
    if not batchable(models[0]):
        max_batch = 1  # a fixed batch: nothing to batch, but the workers and the event loop still serve it
    services = [Service(model, max_body_bytes=max_request_bytes, borrow_timeout_s=args.read_timeout)
                for model in models]
    return Batcher(services, max_batch, args.max_wait_ms / 1000, args.max_queue or args.max_connections)


def default_max_batch(model: ServingModel) -> int:
    """DEFAULT_MAX_BATCH, halved while the batch's input would hold more than BATCH_INPUT_VALUES values."""
    inputs = model.backend.inputs
    per_sample = 1
    for dim in (inputs[0].shape[1:] if inputs and inputs[0].shape else []):
        per_sample *= max(int(dim), 1)
    batch = DEFAULT_MAX_BATCH
    while batch > 1 and batch * per_sample > BATCH_INPUT_VALUES:
        batch //= 2
    return batch


def _per_client(max_connections: int, asked: int | None) -> int:
    """Half the slots for one address, so one host cannot take them all; all of them when there are few (16 or
    fewer), where a client closing and reconnecting would otherwise trip over its own closing connection."""
    return min(asked or max(max_connections // 2, min(max_connections, 16)), max_connections)


def _tune_gc() -> None:
    """Parsing a request builds about one list per sample row (1,000+ for a 32x32x3 image), all freed by reference
    counting, yet each 700 of them set off a cyclic collection: 10 % of a request's CPU when profiled under load.
    Freeze what is loaded (the modules and models: never collected again) and collect the young generation every
    50,000 allocations instead."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def _raise_open_files_limit() -> None:
    """A socket per connection, held or being refused: the usual soft limit of 1024 descriptors is too few under a
    flood (accept would fail and the backlog fill). Raise it to the hard limit, as far as 65536."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass  # not allowed here: keep the soft limit


def _describe(args: argparse.Namespace) -> int:
    print(json.dumps(_load(args.model_dir, args.threads).describe(), indent=2))
    return 0


COMMANDS = {"predict": _predict, "serve": _serve, "describe": _describe}


def _load(model_dir: str, threads: int | None):  # -> ServingModel
    try:
        return load_model(model_dir, num_threads=threads)
    except ModelLoadError as exc:
        raise CliError(f"cannot load the model in {model_dir}: {exc}") from None


def _read_input(source: str, limit: int) -> bytes:
    """At most limit + 1 bytes: enough for the service to say the body is too large without reading all of it."""
    if source == "-":
        return sys.stdin.buffer.read(limit + 1)
    try:
        with open(source, "rb") as handle:
            return handle.read(limit + 1)
    except OSError as exc:
        raise CliError(f"cannot read --input {source}: {exc.strerror or exc}") from None


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds, got {text!r}") from None
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected 0 to 1000 ms, got {text!r}")
    return value


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535 (0: any free port), got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    program = f"python -m {(__package__ or 'edge').split('.')[0]}"
    parser = argparse.ArgumentParser(prog=program, description="Serve the model in this bundle: one-off "
                                     "predictions, a JSON HTTP API, or its description.")
    parser.add_argument("--model-dir", default=os.environ.get("EDGEMAAS_MODEL_DIR") or str(DEFAULT_MODEL_DIR),
                        help="folder with manifest.json and the model file (default: the bundle's model/, or "
                             "$EDGEMAAS_MODEL_DIR)")
    parser.add_argument("--threads", type=_positive(int), default=None,
                        help="interpreter threads per model replica (default: the runtime's choice)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{predict,serve,describe}")

    predict = commands.add_parser("predict", help="predict for one request and print the JSON answer",
                                  description='Read a request ({"inputs": [...]}) and print the predictions.')
    predict.add_argument("--input", "-i", required=True, metavar="FILE",
                         help='JSON request {"inputs": [sample, ...]}; - reads stdin')
    predict.add_argument("--max-request-bytes", type=_positive(int), default=MAX_BODY_BYTES,
                         help=f"largest request accepted (default {MAX_BODY_BYTES})")

    server = commands.add_parser("serve", help="serve a JSON HTTP API until SIGTERM or Ctrl-C",
                                 description="GET /health, GET / (model description), POST / and POST /predict "
                                             '({"inputs": [...]}). Listens on 127.0.0.1 unless --host says '
                                             "otherwise: --host 0.0.0.0 serves every interface (no TLS, no "
                                             "authentication: keep it behind a firewall or a reverse proxy).")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    server.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0 picks a free one)")
    server.add_argument("--workers", type=_positive(int), default=min(4, os.cpu_count() or 1),
                        help="model replicas (interpreters) serving requests in parallel (default: CPUs, at most 4)")
    server.add_argument("--max-connections", type=_positive(int), default=128,
                        help="connections held at once; when all are taken, an idle keep-alive connection or a "
                             "request head still trickling in gives up its slot, else the new one gets a 503 "
                             "(default 128)")
    server.add_argument("--max-connections-per-client", type=_positive(int), default=None,
                        help="connections one client address may hold (default: half of --max-connections, all of "
                             "them up to 16; behind a reverse proxy every client has the proxy's address: raise it)")
    server.add_argument("--max-request-bytes", type=_positive(int), default=None,
                        help="largest request body; larger ones get 413 unread (default: what the model's largest "
                             "legal request needs, max_batch x sample with headroom)")
    server.add_argument("--memory-budget-mb", type=_positive(int), default=DEFAULT_MEMORY_BUDGET_MB,
                        help="memory the server may use; it sizes its buffers to stay under it and refuses to start "
                             f"when the settings cannot fit (default {DEFAULT_MEMORY_BUDGET_MB}, for a 1 GB board)")
    server.add_argument("--read-timeout", type=_positive(float), default=10.0,
                        help="seconds a connection may stay silent, idle keep-alive included (default 10)")
    server.add_argument("--head-timeout", type=_positive(float), default=5.0,
                        help="seconds for a whole request head, from its first byte (default 5)")
    server.add_argument("--body-timeout", type=_positive(float), default=5.0,
                        help="seconds for a body, plus its size at --min-body-rate-kb (default 5)")
    server.add_argument("--min-body-rate-kb", type=_positive(float), default=32.0,
                        help="slowest body upload accepted, KB/s (default 32)")
    server.add_argument("--queue-timeout", type=_positive(float), default=2.0,
                        help="seconds a request waits for a worker before a 503 (default 2)")
    server.add_argument("--max-batch", type=_positive(int), default=None,
                        help="micro-batching: concurrent prediction requests run as one batch of up to this many "
                             f"samples (default {DEFAULT_MAX_BATCH}, halved while a batch would hold more than "
                             f"{BATCH_INPUT_VALUES} input values: 4 for a 32x32x3 image; 1 turns it off; always off "
                             "for a model whose batch size is fixed)")
    server.add_argument("--max-wait-ms", type=_non_negative_float, default=DEFAULT_MAX_WAIT_MS,
                        help="micro-batching: how long a batch may wait for requests still arriving, in ms "
                             f"(default {DEFAULT_MAX_WAIT_MS:g}; a lone request never waits)")
    server.add_argument("--max-queue", type=_positive(int), default=None,
                        help="micro-batching: requests queued or running at once; one more gets an immediate 503 "
                             "(default: --max-connections)")
    server.add_argument("--quiet", action="store_true", help="no access log line per request")

    commands.add_parser("describe", help="print the model's description (inputs, shapes, limits) as JSON")
    return parser
