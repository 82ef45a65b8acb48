"""Development keys and tokens: generate a signing key, publish its JWKS, mint signed JWTs.

For tests, the demo and users' own trials; production tokens come from the real identity provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

_PRIVATE_FIELDS = {"d", "p", "q", "dp", "dq", "qi"}


def generate_key(alg: str = "ES256", kid: str | None = None) -> dict:
    """A new private JWK for `alg` (ES256 or RS256)."""
    key = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else rsa.generate_private_key(65537, 2048)
    algorithm = jwt.algorithms.ECAlgorithm if alg == "ES256" else jwt.algorithms.RSAAlgorithm
    jwk = json.loads(algorithm.to_jwk(key))
    return {**jwk, "kid": kid or uuid.uuid4().hex[:16], "alg": alg, "use": "sig"}


def public_jwk(private: dict) -> dict:
    return {k: v for k, v in private.items() if k not in _PRIVATE_FIELDS}


def public_jwks(*privates: dict) -> dict:
    return {"keys": [public_jwk(p) for p in privates]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims: dict, private: dict, alg: str | None = None, kid: str | None = None) -> str:
    """A JWT of `claims` signed with `private`. `alg` "none" leaves it unsigned; "HS256" signs
    with the *public* key as an HMAC secret (the classic key-confusion attack)."""
    alg = alg or private["alg"]
    header = {"alg": alg, "typ": "JWT", "kid": kid if kid is not None else private.get("kid")}
    if header["kid"] is None:
        del header["kid"]
    if alg == "none":
        body = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
        return body + "."
    if alg.startswith("HS"):
        secret = json.dumps(public_jwk(private), sort_keys=True).encode()
        return _hmac_token(claims, header, secret, alg)
    key = jwt.PyJWK(private, algorithm=alg).key
    return jwt.encode(claims, key, algorithm=alg, headers={k: v for k, v in header.items() if k != "alg"})


def mint_text(header: bytes, payload: bytes, private: dict) -> str:
    """A JWT whose header and payload are exactly these bytes, whatever they hold, signed with
    `private` under its own `alg`: for tokens no JSON serializer would write."""
    signing_input = _b64(header) + "." + _b64(payload)
    algorithm = jwt.PyJWS().get_algorithm_by_name(private["alg"])
    signature = algorithm.sign(signing_input.encode(), jwt.PyJWK(private, algorithm=private["alg"]).key)
    return signing_input + "." + _b64(signature)


def tampered(token: str, changes: dict) -> str:
    """`token` with `changes` written into its payload and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    return f"{header}.{_b64(json.dumps({**claims, **changes}).encode())}.{signature}"


def _hmac_token(claims: dict, header: dict, secret: bytes, alg: str) -> str:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), digest).digest())
