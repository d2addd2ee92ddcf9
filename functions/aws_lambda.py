"""AWS Lambda handler that serves any edgemaas-packaged model. Copied into packages as `handler.py`.

Accepts direct invokes ({"inputs": [...]}), API Gateway HTTP API v2 / Function URL events and REST API v1 proxy
events. The model loads once per execution environment, at init. What a request may hold, and every error it can
get, is the shared contract in `edgemaas/runtime/service.py` (the edge bundle's server answers the same way); this
module only unwraps Lambda's event shapes and wraps the reply. Nothing escapes as an unhandled exception.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # the cold-start profile counts from here

import logging  # noqa: E402 (imports are timed from _STARTED)
import os  # noqa: E402
from typing import Any  # noqa: E402

from edgemaas.runtime import load_model  # noqa: E402
from edgemaas.runtime.service import MAX_BODY_BYTES, Reply, Service  # noqa: E402

logger = logging.getLogger("edgemaas")
logger.setLevel(os.environ.get("EDGEMAAS_LOG_LEVEL", "INFO"))

MODEL_DIR = os.environ.get("EDGEMAAS_MODEL_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "model"))
_IMPORTED = time.perf_counter()
MODEL = load_model(MODEL_DIR)  # at init: a model that cannot load fails the deployment, not each request
SERVICE = Service(MODEL, max_body_bytes=MAX_BODY_BYTES)
if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":  # set by Lambda on SnapStart functions only
    from edgemaas.runtime.snapstart import register as register_snapstart  # noqa: E402

    register_snapstart(SERVICE, MODEL)  # warm with one inference before the snapshot, re-seed after restore
# One line per cold start, in the function's log: where the init time went.
print(f"edgemaas init: imports {(_IMPORTED - _STARTED) * 1000:.1f} ms, model load "
      f"{(time.perf_counter() - _IMPORTED) * 1000:.1f} ms, backend {MODEL.backend.name}, model {MODEL.name} "
      f"{MODEL.manifest.variant} {MODEL.manifest.model.sha256[:12]}", flush=True)


def handler(event: Any, context: Any) -> dict[str, Any]:
    request_id = getattr(context, "aws_request_id", None)
    if not _is_http_event(event):
        # Lambda serializes the returned dict itself: no reply text to make. A direct invoke's event is the request
        # body: the batch form, the tensor form, or an Open Inference Protocol inference request.
        return SERVICE.handle_request(event, request_id, serialize=False).body
    method, path = _method(event), _route_path(event)
    if not (path == "/v2" or path.startswith("/v2/")):
        # Outside /v2 the function answers as it always has, whatever the path (a stage or custom route may prefix
        # it): GET describes, any other method predicts.
        method = "GET" if method in ("GET", "HEAD") else "POST"
        path = "/"
    body = event.get("body") if SERVICE.accepts_body(method, path) else None
    return _http_response(SERVICE.dispatch(method, path, body, bool(event.get("isBase64Encoded")), request_id))


def _is_http_event(event: Any) -> bool:
    return isinstance(event, dict) and "requestContext" in event and ("body" in event or "httpMethod" in event
                                                                     or "routeKey" in event)


def _method(event: dict[str, Any]) -> str:
    if "httpMethod" in event:  # REST API v1
        return str(event["httpMethod"]).upper()
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, dict) else None
    return str(http.get("method", "POST")).upper() if isinstance(http, dict) else "POST"


def _route_path(event: dict[str, Any]) -> str:
    """The path the service routes on: `rawPath` (HTTP API v2, function URLs) or `path` (REST API v1), from its
    /v2 segment on when it has one (an API stage or a custom prefix comes before it)."""
    raw = event.get("rawPath") if "rawPath" in event else event.get("path")
    if not isinstance(raw, str):
        return "/"
    segments = raw.split("?", 1)[0].split("/")
    if "v2" in segments:
        return "/" + "/".join(segments[segments.index("v2"):])
    return raw


def _http_response(reply: Reply) -> dict[str, Any]:
    return {
        "statusCode": reply.status,
        "headers": {"content-type": "application/json", **{k.lower(): v for k, v in reply.headers.items()}},
        "body": reply.text,
        "isBase64Encoded": False,
    }
