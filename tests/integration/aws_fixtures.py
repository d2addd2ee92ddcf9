"""A real `moto_server` on 127.0.0.1 (a free port) for the AWS tests, with fake credentials and a region; and a
fault-injecting HTTP proxy in front of it.

Import the fixture into a test module: `from tests.integration.aws_fixtures import moto_server  # noqa: F401`.
Lambda runs in moto's docker-free backend (`/moto-api/config` `{"lambda": {"use_docker": false}}`), whose Invoke
returns results queued through `/moto-api/static/lambda-simple/response` (see `queue_lambda_results`).

IAM enforcement: `MotoServer.enforce_iam(True)` makes moto authorise every request against the caller's IAM
policies (moto's INITIAL_NO_AUTH_ACTION_COUNT, reset through /moto-api/reset-auth). moto 5.2 checks the signature
of a body-less request (every Lambda GET and DELETE) against a body made of the request headers, so all of them
fail with SignatureDoesNotMatch; the server is therefore started through this file (`python aws_fixtures.py
--port N`), which corrects that one method of the fake before serving. moto authorises Lambda and (missing) IAM
resources against "*" only, and never checks iam:PassRole.

`FaultProxy` forwards to moto_server and, for the operations a test names (optionally only the calls whose body holds
some bytes, e.g. one line of a batch), answers with AWS's own error wire formats (throttling, 5xx, update in progress,
access denied), with any canned response (`respond`; `lambda_function_error` builds Lambda's answer to an Invoke whose
function raised, with its log tail), or holds the call (forwarded or not) until the test releases it.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass
class MotoServer:
    url: str

    def post(self, path: str, body: dict[str, Any] | str) -> bytes:
        data, kind = (body.encode(), "text/plain") if isinstance(body, str) else (json.dumps(body).encode(),
                                                                                   "application/json")
        request = urllib.request.Request(self.url + path, data=data, method="POST", headers={"Content-Type": kind})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def reset(self) -> None:
        self.enforce_iam(False)
        self.post("/moto-api/reset", {})
        self.post("/moto-api/config", {"lambda": {"use_docker": False}})

    def enforce_iam(self, on: bool) -> None:
        """From now on, authorise every request against the caller's IAM policies (or stop)."""
        self.post("/moto-api/reset-auth", "0" if on else "inf")

    def queue_lambda_results(self, *results: Any) -> None:
        """What the next Invoke calls return, in order (a dict or list is sent as JSON)."""
        self.post("/moto-api/static/lambda-simple/response",
                  {"results": [r if isinstance(r, str) else json.dumps(r) for r in results], "region": REGION})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_RUNNING: tuple[subprocess.Popen, MotoServer] | None = None


def _start() -> MotoServer:
    """One moto_server per test session, started at first use (so importing `moto_server` alone is enough)."""
    global _RUNNING
    if _RUNNING is not None:
        return _RUNNING[1]
    port = _free_port()
    process = subprocess.Popen([sys.executable, __file__, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/moto-api/data.json", timeout=1):
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto_server did not start on port {port}") from None
            time.sleep(0.1)
    _RUNNING = (process, MotoServer(url))
    return _RUNNING[1]


def _stop() -> None:
    global _RUNNING
    if _RUNNING is None:
        return
    process = _RUNNING[0]
    _RUNNING = None
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def moto_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A fresh (reset) moto account, and the environment pointing boto3 at it with fake credentials. The server
    process is shared by the session and stopped when the session ends."""
    first = _RUNNING is None
    server = _start()
    if first:
        request.config.add_cleanup(_stop)
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    server.reset()
    return server


# ------------------------------------------------------------------------------------------- the fault proxy

def _lambda_routes() -> list[tuple[str, re.Pattern[str], str]]:
    """(method, path pattern, operation) for every Lambda operation, from botocore's own service model."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("lambda")
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        uri = http["requestUri"].split("?")[0].rstrip("/")
        pattern = re.sub(r"\\\{[^}]+\\\+\\\}", ".+", re.escape(uri))
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern)
        routes.append((http["method"], re.compile(f"^{pattern}/?$"), name))
    return routes


@dataclass
class Seen:
    """One request the proxy saw: when (monotonic seconds), which operation, and what became of it."""

    at: float
    operation: str
    outcome: str  # "forwarded 200", "injected 429", "dropped 201" (done, answer lost), "held"
    body: bytes = b""  # what the caller sent
    headers: dict[str, str] = field(default_factory=dict)  # the request's, names in lower case


def aws_error(kind: str, operation: str = "", message: str = "") -> tuple[int, dict[str, str], bytes]:
    """An error response as AWS sends it: (status, headers, body)."""
    request_id = {"x-amzn-RequestId": str(uuid.uuid4())}
    if operation.startswith(("iam:", "sts:")):
        code, status = {"throttle": ("Throttling", 400), "500": ("ServiceFailure", 500),
                        "access": ("AccessDenied", 403)}[kind]
        xml = (f'<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
               f'<Code>{code}</Code><Message>{message or "Rate exceeded"}</Message></Error>'
               f'<RequestId>{request_id["x-amzn-RequestId"]}</RequestId></ErrorResponse>')
        return status, {"Content-Type": "text/xml", **request_id}, xml.encode()
    if kind == "503":  # a load balancer's answer: no AWS error body at all
        return 503, {"Content-Type": "text/html"}, b"<html><body>503 Service Unavailable</body></html>"
    code, status, default, origin = {
        "throttle": ("TooManyRequestsException", 429, "Rate exceeded", "User"),
        "500": ("ServiceException", 500, "An internal error occurred", "Service"),
        "conflict": ("ResourceConflictException", 409, ("The operation cannot be performed at this time. An update "
                     f"is in progress for resource: arn:aws:lambda:{REGION}:{ACCOUNT}:function:edgemaas-tiny"),
                     "User"),
        "access": ("AccessDeniedException", 403, "", "User"),
    }[kind]
    body = {"Type": origin, "message": message or default}
    if kind == "throttle":
        body["Reason"] = "CallerRateLimitExceeded"
    return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code, **request_id}, \
        json.dumps(body).encode()


def lambda_function_error(error_type: str, message: str, stack: list[str], version: str = "1",
                          function: str = "edgemaas-tiny") -> tuple[int, dict[str, str], bytes]:
    """Lambda's answer to a RequestResponse Invoke (with LogType Tail) whose Python handler raised: 200, the error in
    X-Amz-Function-Error, the last 4 KB of the log base64-encoded in X-Amz-Log-Result, and the runtime's error
    document as the payload. (status, headers, body), for `FaultProxy.respond`."""
    request_id = str(uuid.uuid4())
    traceback = "".join(stack)
    log = (f"START RequestId: {request_id} Version: {version}\n"
           f"[ERROR] {error_type}: {message}\nTraceback (most recent call last):\n{traceback}"
           f"END RequestId: {request_id}\n"
           f"REPORT RequestId: {request_id}\tDuration: 1.52 ms\tBilled Duration: 2 ms\tMemory Size: 512 MB\t"
           "Max Memory Used: 61 MB\t\n")
    payload = {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": stack}
    headers = {"Content-Type": "application/json", "X-Amz-Executed-Version": version,
               "X-Amz-Function-Error": "Unhandled",
               "X-Amz-Log-Result": base64.b64encode(log.encode()[-4096:]).decode(),
               "x-amzn-Remapped-Content-Length": "0", "x-amzn-RequestId": request_id,
               "X-Amzn-Trace-Id": f"root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};sampled=0;lineage="
                                  f"{function}:0"}
    return 200, headers, json.dumps(payload).encode()


@dataclass
class _Rule:
    """What to do with one call of an operation, when its body holds `matching` (or any call): a response to give
    instead of moto's, or None to let moto do the call and drop the answer."""

    matching: bytes | None
    response: tuple[int, dict[str, str], bytes] | None


@dataclass
class _Hold:
    operation: str
    forward: bool
    arrived: threading.Event = field(default_factory=threading.Event)


class FaultProxy:
    """An HTTP proxy in front of moto_server that injects AWS errors into chosen operations, or holds them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.log: list[Seen] = []
        self._rules: dict[str, list[_Rule]] = {}  # per operation, applied in the order given
        self._hold: _Hold | None = None
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._routes = _lambda_routes()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    # what a test asks for
    def fail(self, operation: str, kind: str, times: int = 1, message: str = "",
             matching: bytes | None = None) -> None:
        """Answer the next `times` calls of `operation` (e.g. "lambda:CreateFunction") with an AWS error of `kind`:
        throttle, 500, 503, conflict (Lambda's update in progress) or access; or "drop": let moto do the call, then
        close the connection unanswered (a reply lost on the way back). `matching`: only calls whose body holds
        these bytes count."""
        fault = None if kind == "drop" else aws_error(kind, operation, message)
        self._add(operation, _Rule(matching, fault), times)

    def respond(self, operation: str, status: int, headers: dict[str, str], body: bytes, times: int = 1,
                matching: bytes | None = None) -> None:
        """Answer the next `times` calls of `operation` (whose body holds `matching`, if given) with this HTTP
        response instead of moto's; moto never sees them."""
        self._add(operation, _Rule(matching, (status, headers, body)), times)

    def _add(self, operation: str, rule: _Rule, times: int) -> None:
        with self._lock:
            self._rules.setdefault(operation, []).extend([rule] * times)

    def _take(self, operation: str, body: bytes) -> _Rule | None:
        """The first rule given for this call, used up; None when no rule applies (the call goes to moto)."""
        with self._lock:
            rules = self._rules.get(operation, [])
            for index, rule in enumerate(rules):
                if rule.matching is None or rule.matching in body:
                    return rules.pop(index)
        return None

    def hold(self, operation: str, forward: bool) -> threading.Event:
        """Hold the next call of `operation` until `release()`: after moto has done it and before the caller hears
        (forward=True), or before moto sees it. The event is set once the call is held."""
        self._hold = _Hold(operation, forward)
        self._release.clear()
        return self._hold.arrived

    def release(self) -> None:
        self._hold = None
        self._release.set()

    def attempts(self, operation: str) -> list[Seen]:
        return [seen for seen in self.log if seen.operation == operation]

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    # the proxy
    def operation(self, method: str, path: str, headers: Any, body: bytes) -> str:
        scope = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", headers.get("Authorization", ""))
        service = scope.group(1) if scope else "?"
        if service == "lambda":
            route = urllib.parse.urlsplit(path).path.rstrip("/")
            for verb, pattern, name in self._routes:
                if verb == method and pattern.match(route):
                    return f"lambda:{name}"
        action = urllib.parse.parse_qs(body.decode(errors="replace")).get("Action")
        return f"{service}:{action[0]}" if action else f"{service}:{method}"

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        operation = self.operation(handler.command, handler.path, handler.headers, body)
        now = time.monotonic()
        rule = self._take(operation, body)

        def seen(outcome: str) -> None:
            self.log.append(Seen(now, operation, outcome, body, {k.lower(): v for k, v in handler.headers.items()}))

        if rule is not None and rule.response is None:
            status, _, _ = self._forward(handler, body)
            seen(f"dropped {status}")
            handler.close_connection = True
            return
        if rule is not None and rule.response is not None:
            seen(f"injected {rule.response[0]}")
            self._reply(handler, *rule.response)
            return
        hold = self._hold
        if hold is not None and hold.operation == operation:
            self._hold = None
            if hold.forward:
                self._forward(handler, body)
            seen("held")
            hold.arrived.set()
            self._release.wait(60)
            handler.close_connection = True
            return
        status, headers, answer = self._forward(handler, body)
        seen(f"forwarded {status}")
        self._reply(handler, status, headers, answer)

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("connection", "keep-alive")}
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            skip = ("connection", "keep-alive", "transfer-encoding", "content-length")
            return response.status, {k: v for k, v in response.getheaders() if k.lower() not in skip}, answer
        finally:
            connection.close()

    @staticmethod
    def _reply(handler: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str],
               body: bytes) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)


@pytest.fixture
def fault_proxy(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A FaultProxy in front of the (reset) moto_server, with boto3 pointed at the proxy."""
    proxy = FaultProxy(moto_server.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.close()


# ------------------------------------------------------------------------- moto_server, corrected for IAM checks

def _serve(port: int) -> None:
    """moto_server, with the signature check of body-less requests fixed (see the module doc)."""
    from moto.iam import access_control
    from moto.server import main

    create = access_control.IAMRequestBase._create_aws_request

    def create_without_header_body(self: Any) -> Any:
        if not self._body and self._method in ("GET", "HEAD", "DELETE"):
            self._data = {}  # the query is in the path already; moto put the headers here
        return create(self)

    access_control.IAMRequestBase._create_aws_request = create_without_header_body
    main(["-H", "127.0.0.1", "-p", str(port)])


if __name__ == "__main__":
    _serve(int(sys.argv[sys.argv.index("--port") + 1]))
