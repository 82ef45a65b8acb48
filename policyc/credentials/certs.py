"""Development certificates: a CA, the listener's certificate and client certificates (URI and DNS
SANs, any validity period), each as PEM text; a CA read back from its PEM files (`load_ca`), and
the checks `policyc dev-certs` applies to the SPIFFE IDs and DNS names it is given.

For tests, the demo and users' own trials; production certificates come from the real CA (a mesh's
SPIFFE authority, an internal PKI).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @property
    def cert_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()


def _name(common_name: str, organization: str | None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _window(valid_from: datetime.datetime | None, valid_days: float) -> tuple[datetime.datetime, datetime.datetime]:
    start = valid_from or datetime.datetime.now(datetime.UTC) - DAY
    return start, start + valid_days * DAY


def make_ca(common_name: str, valid_from: datetime.datetime | None = None, valid_days: float = 3650,
            parent: Issued | None = None) -> Issued:
    """A CA that can issue client and server certificates: self-signed, or an intermediate of `parent`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name, "policyc dev")
    start, end = _window(valid_from, valid_days)
    signer = parent.key if parent else key
    certificate = (
        x509.CertificateBuilder().subject_name(name)
        .issuer_name(parent.certificate.subject if parent else name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue(ca: Issued, common_name: str, uris=(), dns=(), organization: str | None = None,
          valid_from: datetime.datetime | None = None, valid_days: float = 365, server: bool = False,
          subject: x509.Name | None = None) -> Issued:
    """A leaf certificate signed by `ca` with these SANs, for a client (or, with `server`, a listener).
    `subject` replaces the name made of `common_name` and `organization`."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(valid_from, valid_days)
    builder = (
        x509.CertificateBuilder().subject_name(_name(common_name, organization) if subject is None else subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                              else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    names = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def load_ca(cert_pem: bytes, key_pem: bytes) -> Issued:
    """A CA from its PEM certificate and unencrypted PEM private key; ValueError says why not one."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(f"not a PEM certificate and unencrypted private key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the key is neither an EC nor an RSA key")
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError("the certificate is not a CA's (no basicConstraints CA:TRUE)")
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise ValueError("the key is not the certificate's")
    return Issued(certificate, key)


# SPIFFE IDs as the SPIFFE ID standard writes them: a lower-case trust domain, then path segments
# of letters, digits, `.`, `-` and `_`. An X.509-SVID of a workload has a path.
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]+((/[A-Za-z0-9._-]+)+)\Z")
_DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(\*\.)?{_DNS_LABEL}(\.{_DNS_LABEL})*\Z")


def spiffe_id_problem(uri: str) -> str | None:
    """Why `uri` is not a workload's SPIFFE ID, if it is not."""
    match = _SPIFFE_ID.match(uri)
    if match is None:
        return (f"{uri!r} is not a SPIFFE ID: spiffe://trust-domain/path, the trust domain in lower-case "
                "letters, digits, '.', '-' and '_', the path's segments in letters, digits, '.', '-' and '_'")
    if any(segment in (".", "..") for segment in match.group(1).split("/")):
        return f"{uri!r} is not a SPIFFE ID: its path has a '.' or '..' segment"
    return None


def dns_name_problem(name: str) -> str | None:
    """Why `name` is not a DNS name a certificate may carry (a leading `*.` allowed), if it is not."""
    if len(name) > 253 or not _DNS_NAME.match(name):
        return f"{name!r} is not a DNS name: labels of letters, digits and '-', joined by '.', a leading '*.' allowed"
    return None
