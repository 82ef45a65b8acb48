"""Grants as reviewed changes: `policyc grant request` writes a grant file for review, `policyc
grant approve` records the approver and signs the grant, `policyc grants` lists them.

The signature is Ed25519 over `grants.signed_text` (the grant's name and settings in canonical
form), made with the private key whose public half the policy set's `grants { key file "…" }`
names; `check` refuses a grant whose signature does not verify. Approving rewrites the file in
canonical form (`policyc fmt`'s), comments kept.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import grants
from .. import nodes as n
from ..source import Source
from ..syntax import parse
from ..syntax.printer import format_file, string, utc

K = n.GrantKey


class ApprovalError(ValueError):
    """Why a grant cannot be requested or approved, in one line."""


def request_text(name: str, service: str, who: str, what: str, start: int, end: int, reason: str,
                 requested_by: str | None) -> str:
    """The text of a grant file asking for access; parsed back to be sure it is one grant, so a
    `who` or `what` that is no condition fails here rather than in review."""
    lines = [f"grant {name} {{", f"    service {service}", f"    who {who}", f"    what {what}",
             f"    from {string(utc(start))}", f"    until {string(utc(end))}"]
    if requested_by is not None:
        lines.append(f"    requested by {string(requested_by)}")
    lines += [f"    reason {string(reason)}", "}"]
    text = "\n".join(lines) + "\n"
    file = _parsed(text, "the request")
    if [type(item) for item in file.items] != [n.Grant] or file.items[0].name != name:
        raise ApprovalError("the request must be one grant: check --name, --who and --what")
    return format_file(file)


def _parsed(text: str, what: str) -> n.PolicyFile:
    file, problems = parse(Source("<grant>", text))
    if file is None or problems:
        first = problems[0] if problems else None
        raise ApprovalError(f"{what} does not parse" + (f": {first.message}" if first else ""))
    return file


def approve(path: str, text: str, approver: str, key: Ed25519PrivateKey, name: str | None = None) -> str:
    """The file's text with its grant (the one named `name`, when it holds several) approved by
    `approver` and signed with `key`; a signature already there is replaced."""
    file = _parsed(text, path)
    found = [item for item in file.items if isinstance(item, n.Grant) and name in (None, item.name)]
    if len(found) != 1:
        named = f"no grant `{name}`" if name else "no grant" if not found else "several grants: name one with --name"
        raise ApprovalError(f"{path} holds {named}")
    grant = found[0]
    if grants.identity(approver) in grants.grantee_names(grant):
        raise ApprovalError(f"{approver} cannot approve a grant for themselves")
    kept = tuple(s for s in grant.settings if s.key not in (K.APPROVED_BY, K.SIGNATURE))
    approved = n.Grant(grant.name, (*kept, n.GrantSetting(K.APPROVED_BY, approver)), grant.span, grant.name_span)
    signature = base64.b64encode(key.sign(grants.signed_text(approved))).decode()
    signed = n.Grant(grant.name, (*approved.settings, n.GrantSetting(K.SIGNATURE, signature)), grant.span,
                     grant.name_span)
    items = tuple(signed if item is grant else item for item in file.items)
    return format_file(n.PolicyFile(file.path, items), Source(path, text))


@dataclass(frozen=True)
class Listed:
    """One grant as `policyc grants` shows it."""

    name: str
    service: str
    state: str  # active, upcoming or expired
    start: int
    end: int
    approved_by: str
    reason: str

    def to_json(self) -> dict:
        return {"name": self.name, "service": self.service, "state": self.state, "from": utc(self.start),
                "until": utc(self.end), "approved_by": self.approved_by, "reason": self.reason}


def listing(policy_set: n.PolicySet, now: float | None = None) -> list[Listed]:
    """Every grant of a checked set with its state at `now` (default: the clock), active first,
    then upcoming, then expired, each by its start."""
    now = time.time() if now is None else now
    found = []
    for grant in policy_set.grants:
        window = grants.window_of(grant)
        found.append(Listed(grant.name, grant.value(K.SERVICE), window.state(now), window.start, window.end,
                            grant.value(K.APPROVED_BY), grant.value(K.REASON)))
    order = {"active": 0, "upcoming": 1, "expired": 2}
    return sorted(found, key=lambda g: (order[g.state], g.start, g.name))
