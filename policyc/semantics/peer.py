"""The verified peer: a client certificate chain (PEM, leaf first) and the `trust` CAs → the peer
the policy sees, none, or a refused handshake. Mirrors the emitted listener's TLS context.

- No `tls` block, no `trust`, or no certificate presented: no peer, and the request goes on.
- A certificate that does not chain to a trust CA, or that is outside its validity period (or
  any certificate of its chain is), fails the handshake: the request never reaches HTTP.
- Otherwise the peer is the leaf's URI SANs, DNS SANs and subject (RFC 2253 text, as Envoy
  writes it), and the name of the trust whose CA issued the chain.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

_MAX_CHAIN = 10  # certificates in a chain, as a verifier's depth limit


@dataclass(frozen=True)
class ClientCertificate:
    """What a client presents: its certificate chain (leaf first) and the leaf's private key, PEM.
    The key only serves the handshake; nothing decides on it."""

    chain: str
    key: str


@dataclass(frozen=True)
class Peer:
    uris: tuple[str, ...]
    dns: tuple[str, ...]
    subject: str
    trust: str


@dataclass(frozen=True)
class HandshakeRefused:
    reason: str


# Attribute names as OpenSSL's RFC 2253 printer writes them; anything else by dotted OID.
_SHORT_NAMES = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
                NameOID.COUNTRY_NAME: "C", NameOID.LOCALITY_NAME: "L", NameOID.STATE_OR_PROVINCE_NAME: "ST",
                NameOID.DOMAIN_COMPONENT: "DC", NameOID.USER_ID: "UID", NameOID.STREET_ADDRESS: "street",
                NameOID.EMAIL_ADDRESS: "emailAddress"}


def subject_text(name: x509.Name) -> str:
    """`name` as RFC 2253 text, the way Envoy reports a certificate's subject."""
    return name.rfc4514_string(_SHORT_NAMES)


_ATTRIBUTES = {short: oid for oid, short in _SHORT_NAMES.items()}


def subject_name(text: str) -> x509.Name:
    """RFC 4514 text (`CN=deploy-bot,O=CI`) as a name, the inverse of `subject_text`; ValueError
    when it is not such text."""
    return x509.Name.from_rfc4514_string(text, _ATTRIBUTES)


def _valid_at(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _chain_to_trust(chain: list[x509.Certificate], trusts: dict[str, tuple[x509.Certificate, ...]],
                    now: datetime.datetime) -> str | HandshakeRefused:
    """The name of the trust the chain leads to, walking presented CA certificates upwards."""
    current, intermediates = chain[0], [c for c in chain[1:] if is_ca(c)]
    for _ in range(_MAX_CHAIN):
        if not _valid_at(current, now):
            return HandshakeRefused("certificate expired or not yet valid")
        for name, cas in sorted(trusts.items()):
            for ca in cas:
                if issued_by(current, ca):
                    return name if _valid_at(ca, now) else HandshakeRefused("trusted CA expired")
        parent = next((c for c in intermediates if issued_by(current, c)), None)
        if parent is None:
            return HandshakeRefused("certificate not issued by a trusted CA")
        intermediates.remove(parent)
        current = parent
    return HandshakeRefused("certificate chain too long")


def sans_of(certificate: x509.Certificate, kind: type) -> tuple[str, ...]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(names.get_values_for_type(kind))


def verified_peer(presented: ClientCertificate | None, trusts: dict[str, tuple[x509.Certificate, ...]],
                  now: float) -> Peer | HandshakeRefused | None:
    """The peer a listener verifying against `trusts` sees (no trusts: it asks for no certificate)."""
    if presented is None or not trusts:
        return None
    try:
        chain = x509.load_pem_x509_certificates(presented.chain.encode())
    except ValueError:
        return HandshakeRefused("not a certificate")
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    trust = _chain_to_trust(chain, trusts, moment)
    if isinstance(trust, HandshakeRefused):
        return trust
    leaf = chain[0]
    return Peer(sans_of(leaf, x509.UniformResourceIdentifier), sans_of(leaf, x509.DNSName),
                subject_text(leaf.subject), trust)
