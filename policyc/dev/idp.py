"""A development identity provider, for local trials, the demo and tests; never for production.

Its signing keys live in a JSON file, `{"issuer": URL, "keys": [private JWK, …]}`, newest first,
shared by `DevIdp` and `mint_token`, so a token minted from the command line verifies against what
the running IdP publishes. `DevIdp(keys_path, port)` serves on 127.0.0.1 only:
- `/.well-known/openid-configuration`: the OpenID discovery document (issuer, jwks_uri);
- `/.well-known/jwks.json`: the public keys.
Its issuer is `http://127.0.0.1:PORT`. `rotate()` signs with a new key from then on and keeps the
previous one published, as identity providers do, so tokens it signed stay valid until they expire.
"""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..credentials.tokens import generate_key, mint, public_jwks
from ..files import Unusable, using

JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
KEPT_KEYS = 2  # the signing key and the one before it
DEFAULT_PORT = 8900  # of `policyc dev-idp`, and the issuer `policyc init` writes


def default_keys_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "policyc" / "dev-idp.json"


def load_keys(path: Path) -> dict:
    """The key file, created with one new key when missing; `Unusable` when it cannot be read or
    is not a key file."""
    if not path.exists():
        save_keys(path, {"issuer": None, "keys": [generate_key()]})
    with using(path, "read the key file"):
        text = path.read_text(encoding="utf-8")
    try:
        ring = json.loads(text)
    except ValueError as e:
        raise Unusable(f"the key file {path} is not JSON: {e}") from None
    keys = ring.get("keys") if isinstance(ring, dict) else None
    if not isinstance(keys, list) or not keys or not all(isinstance(key, dict) for key in keys):
        raise Unusable(f"{path} is not a key file of `policyc dev-idp` ({{\"keys\": [private JWK, …]}})")
    return ring


def save_keys(path: Path, ring: dict) -> None:
    staging = path.with_name(f".{path.name}.new")
    with using(path, "write the key file"):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Private keys: readable by their owner only.
        with os.fdopen(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            json.dump(ring, f, indent=2)
        os.replace(staging, path)


def mint_token(path: Path, sub: str, claims: dict, issuer: str | None = None, audiences: tuple[str, ...] = (),
               expires_in: int = 3600) -> str:
    """A token signed by the current key of the file at `path`; `issuer` defaults to the IdP's."""
    ring = load_keys(path)
    issuer = issuer or ring.get("issuer")
    if not issuer:
        raise Unusable("no issuer: pass one, or start `policyc dev-idp` once with this key file")
    now = int(time.time())
    payload = {"iss": issuer, "sub": sub, "iat": now, "exp": now + expires_in, **claims}
    if audiences:
        payload["aud"] = audiences[0] if len(audiences) == 1 else list(audiences)
    return mint(payload, ring["keys"][0])


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        idp: DevIdp = self.server.idp
        documents = {DISCOVERY_PATH: idp.discovery, JWKS_PATH: idp.jwks}
        if self.path not in documents:
            self.send_error(404)
            return
        body = json.dumps(documents[self.path]()).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # quiet
        pass


class DevIdp:
    """`with DevIdp(keys_path) as idp:` serves on 127.0.0.1 (port 0: a free one) until the block ends."""

    def __init__(self, keys_path: Path, port: int = 0):
        self.keys_path = keys_path
        with using(f"127.0.0.1:{port}", "listen on"):
            self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.idp = self
        self.server.daemon_threads = True
        self.lock = threading.Lock()
        try:
            with self.lock:
                ring = load_keys(keys_path)
                save_keys(keys_path, {**ring, "issuer": self.issuer})
        except Unusable:
            self.server.server_close()
            raise
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def jwks_uri(self) -> str:
        return self.issuer + JWKS_PATH

    def discovery(self) -> dict:
        return {"issuer": self.issuer, "jwks_uri": self.jwks_uri, "id_token_signing_alg_values_supported": ["ES256"],
                "response_types_supported": ["id_token"], "subject_types_supported": ["public"]}

    def jwks(self) -> dict:
        with self.lock:
            return public_jwks(*load_keys(self.keys_path)["keys"])

    def rotate(self) -> None:
        with self.lock:
            ring = load_keys(self.keys_path)
            save_keys(self.keys_path, {**ring, "keys": [generate_key(), *ring["keys"]][:KEPT_KEYS]})

    def __enter__(self) -> DevIdp:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
