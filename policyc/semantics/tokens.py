"""The proxy's token check, modelled on Envoy 1.40 `jwt_authn` as the emitted config sets it up
(every issuer a provider in one `requires_any` with `allow_missing`, token only from
`Authorization: Bearer`, `require_expiration`, 60 s clock skew).

`authenticate(headers, issuers, keys, now)` → a verified `Token`, a `TokenError` (401, or 403 for a
wrong audience), or None when the request carries no token. Each step, and the order of the steps,
was observed on a real Envoy; docs/tokens.md lists the observations.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .. import nodes as n
from . import tokenjson
from .memo import per_object

CLOCK_SKEW = 60
_TOKEN_CHAR = re.compile(r"[A-Za-z0-9_.-]")
_ALGS = {"ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
         "PS256", "PS384", "PS512", "EdDSA"}
_HASHES = {"384": hashes.SHA384, "512": hashes.SHA512}


@dataclass(frozen=True)
class Token:
    """A verified token: the name of the issuer whose keys verified it, and its claims."""

    issuer: str
    claims: dict


@dataclass(frozen=True)
class TokenError:
    """A presented token the proxy refuses: the status it answers and its body text."""

    status: int
    reason: str


class _Refused(Exception):
    def __init__(self, reason: str, status: int = 401):
        super().__init__(reason)
        self.error = TokenError(status, reason)


# ---------------------------------------------------------------- extraction


def extract(headers, http2: bool = False) -> str | None:
    """The token Envoy takes from `Authorization`: non-empty lines joined with ",", the first
    case-sensitive "Bearer " anywhere in the value, then from the first token character to the end.
    The lines are as the codec hands them on: HTTP/1's trimmed, HTTP/2's with their spaces, so
    `Bearer ` then `x` reads "Bearer,x" (no token) over HTTP/1 but "Bearer ,x" (token `x`) over
    HTTP/2 (found by the differential suite)."""
    lines = [value if http2 else value.strip(" \t") for name, value in headers if name.lower() == "authorization"]
    # Envoy joins the lines with "," but skips empty ones (found by the differential suite).
    value = ",".join(line for line in lines if line)
    position = value.find("Bearer ")
    if position < 0:
        return None
    start = _TOKEN_CHAR.search(value, position + 7)
    return None if start is None else value[start.start():]


# ---------------------------------------------------------------- parsing


_WHITESPACE = str.maketrans("", "", " \t\r\n\v\f")
_B64_BODY = re.compile(r"[A-Za-z0-9_-]*\Z")


def _b64url(text: str) -> bytes | None:
    """absl's WebSafeBase64Unescape: whitespace skipped, padding optional but exact."""
    text = text.translate(_WHITESPACE)
    body = text.rstrip("=")
    if not _B64_BODY.match(body) or (text != body and len(text) % 4) or len(body) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class _Jwt:
    header: dict
    claims: dict
    times: dict  # iat/nbf/exp truncated to whole seconds
    audiences: tuple[str, ...]
    signature: bytes
    signed: bytes


def _time_claim(claims: dict, name: str) -> int:
    value = claims.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"Jwt payload [{name}] field is not an integer")
    if not 0 <= value < 2**64:
        raise _Refused(f"Jwt payload [{name}] field is not a positive 64 bit integer")
    return int(value)


def _json_part(text: str, part: str) -> dict:
    """The header or payload: base64url of a JSON object, refused as Envoy words it."""
    data = _b64url(text)
    if data is None:
        raise _Refused(f"Jwt {part} is an invalid Base64url encoded")
    value = tokenjson.loads(data)
    if value is None:
        raise _Refused(f"Jwt {part} is an invalid JSON")
    return value


def parse(token: str) -> _Jwt:
    parts = [p for p in token.split(".") if p]
    if len(parts) != 3:
        raise _Refused("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
    header = _json_part(parts[0], "header")
    if not isinstance(header.get("alg"), str):
        raise _Refused("Jwt header [alg] field is required and must be a string")
    if header["alg"] not in _ALGS:
        raise _Refused("Jwt header [alg] is not supported")
    if "kid" in header and not isinstance(header["kid"], str):
        raise _Refused("Jwt header [kid] field is not a string")
    claims = _json_part(parts[1], "payload")
    for name in ("iss", "sub"):
        if name in claims and not isinstance(claims[name], str):
            raise _Refused(f"Jwt payload [{name}] field is not a string")
    times = {name: _time_claim(claims, name) for name in ("iat", "nbf", "exp")}
    if "jti" in claims and not isinstance(claims["jti"], str):
        raise _Refused("Jwt payload [jti] field is not a string")
    audiences = claims.get("aud", [])
    audiences = [audiences] if isinstance(audiences, str) else audiences
    if not (isinstance(audiences, list) and all(isinstance(a, str) for a in audiences)):
        raise _Refused("Jwt payload [aud] field is not a string or string list")
    signature = _b64url(parts[2])
    if signature is None:
        raise _Refused("Jwt signature is an invalid Base64url encoded")
    return _Jwt(header, claims, times, tuple(audiences), signature, f"{parts[0]}.{parts[1]}".encode())


@lru_cache(maxsize=4096)
def _parsed(token_text: str) -> _Jwt | TokenError:
    """`parse`, kept: a client sends the same token many times, and reading it means two base64
    and JSON decodes. Verification, which depends on the clock and the keys, is not kept."""
    try:
        return parse(token_text)
    except _Refused as refused:
        return refused.error


# ---------------------------------------------------------------- verification


def _normalized_audience(audience: str) -> str:
    for scheme in ("https://", "http://"):
        if audience.startswith(scheme):
            audience = audience[len(scheme):]
            break
    return audience[:-1] if audience.endswith("/") else audience


@per_object
def _allowed_audiences(issuer: n.Issuer) -> frozenset[str]:
    return frozenset(map(_normalized_audience, issuer.audiences))


@per_object
def _url(issuer: n.Issuer) -> str | None:
    return issuer.url


def _signature_ok(key: dict, alg: str, signature: bytes, signed: bytes) -> bool:
    return _signature_ok_cached(_key_text(key), alg, signature, signed)


_KEY_TEXTS: dict[int, tuple[dict, dict, str]] = {}


def _key_text(key: dict) -> str:
    """The key as canonical JSON, its name in the signature cache. Serializing costs more than a
    whole cached check, so the text is kept per key object, and reused only while the object
    still equals a private copy of itself."""
    entry = _KEY_TEXTS.get(id(key))
    if entry is None or entry[0] is not key or entry[1] != key:
        if len(_KEY_TEXTS) >= 4096:
            _KEY_TEXTS.clear()
        entry = key, copy.deepcopy(key), json.dumps(key, sort_keys=True)
        _KEY_TEXTS[id(key)] = entry
    return entry[2]


@lru_cache(maxsize=4096)
def _signature_ok_cached(key_json: str, alg: str, signature: bytes, signed: bytes) -> bool:
    """Envoy's rule: the key's type picks the scheme; the token's `alg` only picks the hash.
    Cached because a signature check is a pure function of its inputs and costs ~100 µs."""
    key = json.loads(key_json)
    digest = _HASHES.get(alg[-3:], hashes.SHA256)()
    try:
        public = jwt.PyJWK(key, key.get("alg") or _default_alg(key)).key
        if key.get("kty") == "EC":
            half = len(signature) // 2
            r, s = int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:2 * half], "big")
            public.verify(encode_dss_signature(r, s), signed, ec.ECDSA(digest))
            return True
        if key.get("kty") == "RSA" and alg[:2] in ("RS", "PS"):
            pss = padding.PSS(padding.MGF1(digest), digest.digest_size)
            scheme = padding.PKCS1v15() if alg.startswith("RS") else pss
            public.verify(signature, signed, scheme, digest)
            return True
    except (InvalidSignature, jwt.exceptions.PyJWTError, ValueError, TypeError):
        return False
    return False


def _default_alg(key: dict) -> str:
    return {"EC": "ES256", "RSA": "RS256"}.get(key.get("kty"), "ES256")


def _verify_with(issuer: n.Issuer, jwks: Mapping | None, token: _Jwt, now: int) -> Token:
    nbf, exp = token.times["nbf"], token.times["exp"]
    if now + CLOCK_SKEW < nbf:
        raise _Refused("Jwt not yet valid")
    if exp and now > exp + CLOCK_SKEW:
        raise _Refused("Jwt is expired")
    allowed = _allowed_audiences(issuer)
    if allowed and not any(_normalized_audience(a) in allowed for a in token.audiences):
        raise _Refused("Audiences in Jwt are not allowed", 403)
    if not exp:
        raise _Refused("Jwt verification fails")
    alg, kid = token.header["alg"], token.header.get("kid")
    matched = False
    for key in (jwks or {}).get("keys", []):
        if kid and key.get("kid") and key["kid"] != kid:
            continue
        if key.get("alg") and key["alg"] != alg:
            continue
        matched = True
        if _signature_ok(key, alg, token.signature, token.signed):
            return Token(issuer.name, token.claims)
    # No keys at all (a remote JWKS the proxy could not fetch) fails as a key mismatch does.
    raise _Refused("Jwt verification fails" if matched else "Jwks doesn't have key to match kid or alg from Jwt")


def authenticate(headers, issuers: Mapping[str, n.Issuer], keys: Mapping[str, dict],
                 now: float, http2: bool = False) -> Token | TokenError | None:
    """Decide the request's identity as `jwt_authn` does. No issuers → no filter → no token."""
    if not issuers:
        return None
    token_text = extract(headers, http2)
    if token_text is None:
        return None
    token = _parsed(token_text)
    if isinstance(token, TokenError):
        return token
    try:
        # One provider per issuer and issuer URLs are unique, so `iss` picks the only provider
        # that can answer anything but "issuer not configured".
        issuer = next((i for i in issuers.values() if _url(i) == token.claims.get("iss", "")), None)
        if issuer is None:
            raise _Refused("Jwt issuer is not configured")
        return _verify_with(issuer, keys.get(issuer.name), token, math.floor(now))
    except _Refused as refused:
        return refused.error


def put_claim(claims: dict, path: tuple[str, ...], value) -> None:
    """Set a nested claim unless something already stands at its place."""
    here = claims
    for key in path[:-1]:
        here = here.setdefault(key, {})
        if not isinstance(here, dict):
            return  # another claim already holds a value at this prefix
    here.setdefault(path[-1], value)


def claim_value(claims: dict, path: tuple[str, ...], missing=None):
    """The claim at `path` (object keys), or `missing` when any step is missing or not an object."""
    value = claims
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return missing
        value = value[key]
    return value
