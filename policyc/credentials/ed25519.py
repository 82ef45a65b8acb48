"""Ed25519 keys for signing, shared by sealed logs (ops/seal) and grant approvals (ops/approval):
`new_pair()` → (private PEM, public PEM); `private_key(pem)` and `public_key(pem)` → the key, or
`KeyProblem` saying why the PEM is not one."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyProblem(ValueError):
    """The PEM holds no usable Ed25519 key."""


def new_pair() -> tuple[str, str]:
    """A fresh Ed25519 key: (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise KeyProblem("not a PEM private key without a password") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyProblem("not an Ed25519 key (seals and grant approvals are signed with Ed25519)")
    return key


def public_key(pem: bytes) -> Ed25519PublicKey:
    """The public key of a public key PEM, or of a private key PEM."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        return private_key(pem).public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise KeyProblem("not an Ed25519 key (seals and grant approvals are signed with Ed25519)")
    return key
