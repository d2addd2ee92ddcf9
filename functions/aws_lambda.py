"""AWS Lambda handler that serves any edgemaas-packaged model. Copied into packages as `handler.py`.

Accepts direct invokes ({"inputs": [...]}), API Gateway HTTP API v2 / Function URL events and REST API v1 proxy
events. The model loads once per execution environment, at init. Bad requests get 400 with a JSON error saying
what was wrong; anything else gets 500 with the request id and is logged. Nothing escapes as an unhandled exception.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # the cold-start profile counts from here

import base64  # noqa: E402 (imports are timed from _STARTED)
import binascii  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

from edgemaas.runtime import RequestError, load_model  # noqa: E402
from edgemaas.runtime.processing import json_type  # noqa: E402

logger = logging.getLogger("edgemaas")
logger.setLevel(os.environ.get("EDGEMAAS_LOG_LEVEL", "INFO"))

MAX_BODY_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit
MODEL_DIR = os.environ.get("EDGEMAAS_MODEL_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "model"))
_IMPORTED = time.perf_counter()
MODEL = load_model(MODEL_DIR)  # at init: a model that cannot load fails the deployment, not each request
# One line per cold start, in the function's log: where the init time went.
print(f"edgemaas init: imports {(_IMPORTED - _STARTED) * 1000:.1f} ms, model load "
      f"{(time.perf_counter() - _IMPORTED) * 1000:.1f} ms, backend {MODEL.backend.name}, model {MODEL.name} "
      f"{MODEL.manifest.variant} {MODEL.manifest.model.sha256[:12]}", flush=True)


class BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def handler(event: Any, context: Any) -> dict[str, Any]:
    http = _is_http_event(event)
    request_id = getattr(context, "aws_request_id", None)
    try:
        if http and _method(event) == "GET":
            return _http_response(200, MODEL.describe())
        request = _http_body(event) if http else event
        if not isinstance(request, dict):
            raise BadRequest(f"the request must be a JSON object like {{\"inputs\": [...]}}, got {json_type(request)}")
        if "inputs" not in request:
            raise BadRequest('missing "inputs": send {"inputs": [sample, ...]}', field="inputs")
        unknown = sorted(set(request) - {"inputs"})
        if unknown:
            raise BadRequest(f"unknown key(s) {', '.join(map(repr, unknown))}; only \"inputs\" is accepted")
        body = {
            "model": MODEL.name, "variant": MODEL.manifest.variant,
            "predictions": MODEL.predict(request["inputs"]),
        }
        return _http_response(200, body) if http else body
    except (BadRequest, RequestError) as exc:
        status = getattr(exc, "status", 400)
        error = {"type": "InvalidRequest", "message": str(exc), "status": status}
        if getattr(exc, "field", None):
            error["field"] = exc.field
        logger.info("rejected request %s: %s", request_id, exc)
        return _http_response(status, {"error": error}) if http else {"error": error}
    except Exception:  # the contract: never let a request escape as an unhandled exception
        logger.exception("internal error serving request %s", request_id)
        error = {"type": "InternalError", "message": "internal error; see the function's logs",
                 "request_id": request_id, "status": 500}
        return _http_response(500, {"error": error}) if http else {"error": error}


def _is_http_event(event: Any) -> bool:
    return isinstance(event, dict) and "requestContext" in event and ("body" in event or "httpMethod" in event
                                                                     or "routeKey" in event)


def _method(event: dict[str, Any]) -> str:
    if "httpMethod" in event:  # REST API v1
        return str(event["httpMethod"]).upper()
    return str(event.get("requestContext", {}).get("http", {}).get("method", "POST")).upper()


def _http_body(event: dict[str, Any]) -> Any:
    raw = event.get("body")
    if raw is None or raw == "":
        raise BadRequest('the request body is empty; send JSON like {"inputs": [...]}', field="body")
    if not isinstance(raw, str):
        raise BadRequest("the request body must be a string", field="body")
    if len(raw) > MAX_BODY_BYTES * 4 // 3 + 4:
        raise BadRequest(f"the request body exceeds {MAX_BODY_BYTES // (1024 * 1024)} MB", field="body", status=413)
    data: bytes | str = raw
    if event.get("isBase64Encoded"):
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("the body is marked isBase64Encoded but is not valid base64", field="body") from None
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the request body is not valid UTF-8", field="body") from None
    if len(data.encode("utf-8")) > MAX_BODY_BYTES:
        raise BadRequest(f"the request body exceeds {MAX_BODY_BYTES // (1024 * 1024)} MB", field="body", status=413)
    try:
        return json.loads(data)
    except RecursionError:
        raise BadRequest("the request body is nested too deeply", field="body") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                         field="body") from None


def _http_response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body, allow_nan=False),
        "isBase64Encoded": False,
    }

