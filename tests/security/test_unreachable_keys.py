"""An issuer whose keys cannot be fetched (`jwks "<uri>"`): nobody listens, the key server fails, or
it serves something that is not a JWKS. Every request with a token is refused (401) in a real
Envoy, as the interpreter decides when it has no keys for the issuer; anonymous callers still get
public rules; nothing refused reaches the upstream."""

from __future__ import annotations

import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest

from policyc.backends import compile_outputs
from policyc.backends.envoy import LISTENER_NAME, Options
from policyc.credentials import tokens as devtokens
from policyc.interpret import RawRequest, evaluate
from policyc.pipeline import load_and_check
from policyc.proof.client import send
from policyc.proof.envoy_process import running_envoy
from policyc.proof.upstream import RecordingUpstream

pytestmark = pytest.mark.envoy

POLICY = """
issuer idp {{
    url      "https://idp.keys.test"
    jwks     "http://127.0.0.1:{port}/jwks.json"
    audience "keys"
}}

service api {{
    hosts    "api.internal"
    upstream "127.0.0.1:9000"

    allow public "health" when path == "/healthz"
    allow "signed-in"     when authenticated
}}
"""

ANSWERS = {"fails": (500, b"down\n"), "not a JWKS": (200, b"<html>"), "no keys": (200, b'{"keys": []}')}


def _key_server(status: int, body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    return server


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("key_server", ["nobody listens", *ANSWERS])
def test_tokens_are_refused_when_keys_cannot_be_fetched(key_server, tmp_path):
    server = _key_server(*ANSWERS[key_server]) if key_server in ANSWERS else None
    port = server.server_address[1] if server else _closed_port()
    try:
        (tmp_path / "p.policy").write_text(POLICY.format(port=port))
        checked = load_and_check([str(tmp_path / "p.policy")]).checked
        key = devtokens.generate_key()
        now = time.time()
        token = devtokens.mint({"iss": "https://idp.keys.test", "aud": "keys", "sub": "u", "exp": int(now) + 600}, key)
        bearer = (("authorization", f"Bearer {token}"),)
        requests = {
            RawRequest("GET", "/healthz", "api.internal"): 200,
            RawRequest("GET", "/healthz", "api.internal", bearer): 401,
            RawRequest("GET", "/x", "api.internal", bearer): 401,
            RawRequest("GET", "/x", "api.internal"): 403,
        }
        with RecordingUpstream() as upstream:
            options = Options("127.0.0.1:0", "127.0.0.1:0", str(tmp_path / "access.log"), upstream.address)
            config = compile_outputs(checked, "auto", options).bootstrap
            with running_envoy(config, tmp_path, args=["--concurrency", "1"]) as envoy:
                for request, status in requests.items():
                    assert evaluate(checked, request, now, {}).status == status
                    assert send(envoy.listener_ports[LISTENER_NAME], request)[0] == status
            assert [r.target for r in upstream.received] == ["/healthz"]
    finally:
        if server:
            server.shutdown()
            server.server_close()
