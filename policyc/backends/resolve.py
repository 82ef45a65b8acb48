"""Compile-time facts both backends share: where claims live, and what `member` means once the
catalog is resolved. Takes a `Checked` set; returns plain sets and strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import nodes as n
from ..catalog import normalize_ref
from ..check import Checked

PAYLOAD_KEY = "jwt_payload"  # where jwt_authn puts a verified token's claims (payload_in_metadata)


@dataclass(frozen=True)
class Membership:
    """`member …` resolved: a catalog caller whose `sub` is in `subjects` or whose `ent` holds one
    of `entities`, with a token from one of `issuer_urls`."""

    issuer_urls: tuple[str, ...]
    subjects: tuple[str, ...]
    entities: tuple[str, ...]


def membership(checked: Checked, node: n.Member | n.MemberOwners) -> Membership:
    catalog = checked.catalog
    issuer_urls = tuple(sorted(i.url for i in checked.issuers.values() if i.catalog_users))
    if isinstance(node, n.Member):
        group = normalize_ref(node.group, "group")
    else:
        group = catalog.owner_of(normalize_ref(node.entity, None))
        if not group.startswith("group:"):  # a user owns it: that user, by `sub` or in `ent`
            return Membership(issuer_urls, (group,), (group,))
    return Membership(issuer_urls, tuple(sorted(catalog.users_in(group))),
                      tuple(sorted(catalog.groups_within(group))))

