"""A checked policy set: what the checker hands the interpreter, the backends and the analysis.

`Checked` holds the policy set with every name resolved (issuers, conditions, services), the
catalog, the keys and CA certificates read from files, and the listener's TLS material.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509

from . import nodes as n
from .catalog import Catalog, normalize_ref
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
    _members: dict = field(default_factory=dict, repr=False, compare=False)

    def members(self, node: n.Member | n.MemberOwners) -> Members:
        """The one reading of `member GROUP` and `member owners of ENTITY` that the interpreter,
        the backends and the analysis share; worked out once per atom."""
        found = self._members.get(node)
        if found is None:
            found = self._members[node] = _members(self.catalog, node)
        return found


@dataclass(frozen=True)
class Members:
    """Who a `member` atom admits, given a token of an issuer marked `catalog users`: a caller
    whose `sub` is one of `subjects`, or whose `ent` holds one of `entities`."""

    subjects: frozenset[str]
    entities: frozenset[str]


def _members(catalog: Catalog, node: n.Member | n.MemberOwners) -> Members:
    if isinstance(node, n.Member):
        group = normalize_ref(node.group, "group")
    else:
        group = catalog.owner_of(normalize_ref(node.entity, None))
        if not group.startswith("group:"):  # a user owns it: that user, by `sub` or in `ent`
            return Members(frozenset({group}), frozenset({group}))
    return Members(frozenset(catalog.users_in(group)), frozenset(catalog.groups_within(group)))


@dataclass(frozen=True)
class ListenerTls:
    """The listener's own certificate chain and private key, as PEM text."""

    chain: str
    key: str
