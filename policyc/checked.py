"""A checked policy set: what the checker hands the interpreter, the backends and the analysis.

`Checked` holds the policy set with every name resolved (issuers, conditions, services), the
catalog, the keys and CA certificates read from files, and the listener's TLS material.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509

from . import nodes as n
from .catalog import Catalog
from .source import Source


@dataclass
class Checked:
    """A policy set that passed the checker, with everything the interpreter and backends need."""

    policy_set: n.PolicySet
    catalog: Catalog
    issuers: dict[str, n.Issuer] = field(default_factory=dict)
    conditions: dict[str, n.Condition] = field(default_factory=dict)
    services: dict[str, n.Service] = field(default_factory=dict)
    keys: dict[str, dict] = field(default_factory=dict)  # issuer name → JWKS, for `jwks file`
    sources: dict[str, Source] = field(default_factory=dict)  # catalog files read
    trusts: dict[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)  # trust name → CA certs
    listener_tls: ListenerTls | None = None  # the `tls` block's certificate and key, when declared
    trust_decls: dict[str, n.Trust] = field(default_factory=dict)  # trust name → its (first) declaration


@dataclass(frozen=True)
class ListenerTls:
    """The listener's own certificate chain and private key, as PEM text."""

    chain: str
    key: str
