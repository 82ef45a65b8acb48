"""Compile-time facts the backends share: where claims live, what `member` means once the
catalog is resolved, and the path prefixes a rule's requests must have (which routes hold an RBAC
rule, which shares of the native filter's index, and how the Lua runtime indexes rules). Takes a
`Checked` set; returns plain sets and strings.
Also how a backend says it cannot express a condition: `Unsupported`, and the located error that
`--target rbac` or `--target native` reports for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import nodes as n
from ..checked import Checked
from ..diagnostics import Diagnostic
from ..semantics.required import required_prefixes as semantics_required_prefixes

JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "jwt_payload"  # where jwt_authn puts a verified token's claims (payload_in_metadata)


class Unsupported(Exception):
    """A condition a backend cannot express; carries the offending node."""

    def __init__(self, node: n.Expr, reason: str):
        super().__init__(reason)
        self.node = node
        self.reason = reason


def unsupported_diagnostic(code: str, rule: n.Rule, unsupported: Unsupported) -> Diagnostic:
    """The error of a rule that the target it was compiled for cannot express, at the atom."""
    return Diagnostic(code, f"rule `{rule.name}`: {unsupported.reason}", unsupported.node.span or rule.span,
                      hint="compile with --target lua or auto")


@dataclass(frozen=True)
class Membership:
    """`member …` resolved: a catalog caller whose `sub` is in `subjects` or whose `ent` holds one
    of `entities`, with a token from one of `issuer_urls`."""

    issuer_urls: tuple[str, ...]
    subjects: tuple[str, ...]
    entities: tuple[str, ...]


def membership(checked: Checked, node: n.Member | n.MemberOwners) -> Membership:
    members = checked.members(node)
    issuer_urls = tuple(sorted(i.url for i in checked.issuers.values() if i.catalog_users))
    return Membership(issuer_urls, tuple(sorted(members.subjects)), tuple(sorted(members.entities)))


def required_prefixes(checked: Checked, expr: n.Expr) -> tuple[str, ...] | None:
    """Path prefixes one of which every request matching `expr` has (an exact path is its own
    prefix), or None when `expr` does not narrow the path: `semantics.required`, which the
    interpreter's rule index shares. The runtime indexes rules by them."""
    return semantics_required_prefixes(expr, checked.conditions)


# Rules that test no path go into every route; past this many copies per rule on average, one
# route holding every rule is the smaller config.
_MAX_COPIES_PER_RULE = 4


def route_shares(checked: Checked, service: n.Service) -> dict[str, tuple[n.Rule, ...]]:
    """Each route's path prefix, longest first and "/" last, with the rules that a path under it
    can match: rules that need a prefix the route's prefix has, and rules that need none; or one
    route "/" with every rule when that is the smaller config. A request is decided by the share
    of the longest prefix its path has: RBAC's per-route configs and the native filter's shares;
    the Lua script indexes its rules by the same prefixes (required_prefixes).

    Rules are filed by prefix, and a route finds its share by looking up its own prefix cut at
    each length a rule's prefix has, so the work grows with the routes and their shares rather
    than with routes times rules; it stops as soon as the shares outgrow the budget."""
    anywhere, by_prefix = set(), {}
    for position, rule in enumerate(service.rules):
        prefixes = required_prefixes(checked, rule.expr)
        if prefixes is None:
            anywhere.add(position)
        for prefix in prefixes or ():
            by_prefix.setdefault(prefix, set()).add(position)
    lengths = sorted({len(prefix) for prefix in by_prefix})
    budget = _MAX_COPIES_PER_RULE * max(len(service.rules), 1)
    shares = {}
    for route in sorted(by_prefix.keys() | {"/"}, key=lambda p: (-len(p), p)):
        found = anywhere.union(*(by_prefix.get(route[:length], ()) for length in lengths if length <= len(route)))
        budget -= len(found)
        if budget < 0:
            return {"/": service.rules}
        shares[route] = tuple(service.rules[position] for position in sorted(found))
    return shares
