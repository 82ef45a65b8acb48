"""Example requests: takes a z3 model of a `RequestSpace` and returns the concrete request it
stands for (a `RawRequest` with a really signed token, and a readable description), and replays
it through the reference interpreter, which has the last word.

Every issuer gets a made-up signing key per issuer `url`, shared by the versions compared, so a
token means the same in both; the versions' own keys are replaced by those (key rotation is not
analysed). Likewise every trusted CA (by fingerprint) gets a made-up CA that issues the example's
client certificate, and the replay trusts the made-up CAs in place of the real ones.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field, replace

import z3
from cryptography import x509

from .. import nodes as n
from ..checked import Checked
from ..credentials import certs as devcerts
from ..credentials import tokens as devtokens
from ..interpret import evaluate
from ..semantics.peer import ClientCertificate
from ..semantics.request import Decision, RawRequest
from ..semantics.tokens import put_claim
from .space import (
    BOOL,
    FOREIGN_ISSUER,
    LIST,
    NUMBER,
    OBJECT,
    STRING,
    TOKEN_FOREIGN,
    TOKEN_GARBAGE,
    TOKEN_NONE,
    RequestSpace,
    Solution,
    fingerprint,
)


class AnalysisError(AssertionError):
    """The interpreter decided an example request otherwise than the symbolic model predicted:
    a fault of the analysis, never of the policy, so nothing is reported as found."""


@dataclass
class Signer:
    """A made-up private key per issuer url (and one for the unknown issuer), and a made-up CA per
    trusted CA's fingerprint (and one no policy trusts)."""

    keys: dict[str, dict] = field(default_factory=dict)
    cas: dict[str, devcerts.Issued] = field(default_factory=dict)

    def ca(self, fingerprint: str | None) -> devcerts.Issued:
        if fingerprint not in self.cas:
            self.cas[fingerprint] = devcerts.make_ca(f"analysis CA {len(self.cas)}")
        return self.cas[fingerprint]

    def trusts(self, checked: Checked) -> dict[str, tuple[x509.Certificate, ...]]:
        """`checked`'s trusts with each CA replaced by its made-up one."""
        return {name: tuple(self.ca(fingerprint(ca)).certificate for ca in cas) for name, cas in checked.trusts.items()}

    def key(self, url: str) -> dict:
        if url not in self.keys:
            self.keys[url] = devtokens.generate_key("ES256")
        return self.keys[url]

    def published(self, checked: Checked) -> dict[str, dict]:
        """The JWKS each issuer of `checked` publishes: its url's made-up key."""
        return {name: devtokens.public_jwks(self.key(i.url)) for name, i in checked.issuers.items()}


@dataclass(frozen=True)
class Example:
    """A concrete request: what to send, and how to describe it to a reader."""

    request: RawRequest
    description: dict


def _int(model: z3.ModelRef, term) -> int:
    return model.eval(term, model_completion=True).as_long()


def _true(model: z3.ModelRef, term) -> bool:
    return z3.is_true(model.eval(term, model_completion=True))


def target_for(path: str) -> str:
    """A request-target that normalizes to `path`: a segment starting with "." is sent as "%2e…"
    so that a `;` after it is kept (the proxy strips `.;x` and `..;x` segments when sent raw)."""
    return "/".join("%2e" + s[1:] if s.startswith(".") else s for s in path.split("/"))


def _source(model: z3.ModelRef, space: RequestSpace) -> str:
    value = _int(model, space.address)
    if _true(model, space.v6):
        return str(ipaddress.IPv6Address(value))
    return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))


def _claim_value(model: z3.ModelRef, claim):
    """The JSON value of a claim in `model`, None when it is missing."""
    kind = _int(model, claim.kind)
    if kind == STRING:
        return claim.text.value(model)
    if kind == BOOL:
        return _true(model, claim.flag)
    if kind == LIST:
        return [v for v, held in sorted(claim.members.items()) if _true(model, held)]
    return {OBJECT: {}, NUMBER: 0}.get(kind)


def _claims(model: z3.ModelRef, space: RequestSpace, iss: str, now: int) -> dict:
    claims = {"iss": iss, "iat": now, "exp": now + 3600}
    for path, claim in sorted(space.claims.items(), key=lambda item: len(item[0])):
        if path in (("iss",), ("iat",), ("exp",), ("nbf",)):
            continue
        value = _claim_value(model, claim)
        if value is not None:
            put_claim(claims, path, value)
    return claims


def example(model: Solution, space: RequestSpace, host: str, signer: Signer, checked_by_url: dict,
            now: int) -> Example:
    """The request `model` describes, sent to `host`. `checked_by_url` names each issuer url's
    issuer, for the description."""
    path = model.path
    method = space.methods[_int(model, space.method)]
    kind = space.token_kinds[_int(model, space.token)]
    headers: list[tuple[str, str]] = []
    shown: dict[str, list[str]] = {}
    signed = kind not in (TOKEN_NONE, TOKEN_GARBAGE)
    for name, header in space.headers.items():
        if name == "authorization" and signed:
            continue
        for present, value in zip(header.present, header.values, strict=True):
            if _true(model, present):
                headers.append((name, value.value(model)))
                shown.setdefault(name, []).append(headers[-1][1])
    description = {"method": method, "path": path, "host": host}
    token = None
    if kind == TOKEN_GARBAGE and "authorization" not in space.headers:
        headers.append(("authorization", "Bearer x"))
        description["token"] = "malformed (`Bearer x`)"
    elif signed:
        iss = FOREIGN_ISSUER if kind == TOKEN_FOREIGN else kind
        claims = _claims(model, space, iss, now)
        token = devtokens.mint(claims, signer.key(iss))
        headers.append(("authorization", f"Bearer {token}"))
        shown_claims = {k: v for k, v in claims.items() if k not in ("iss", "iat", "exp")}
        description["token"] = {"issuer": checked_by_url.get(iss, "an undeclared issuer"), "iss": iss,
                                "claims": shown_claims}
    if shown:
        description["headers"] = {k: v[0] if len(v) == 1 else v for k, v in shown.items()}
    source = _source(model, space)
    description["source"] = source
    certificate, described = _certificate(model, space, signer)
    if certificate:
        description["certificate"] = described
    return Example(RawRequest(method, target_for(path), host, tuple(headers), source, certificate=certificate),
                   description)


def replay(checked: Checked, example_request: Example, signer: Signer, now: int) -> Decision:
    with_made_up_cas = replace(checked, trusts=signer.trusts(checked))
    return evaluate(with_made_up_cas, example_request.request, now, keys=signer.published(checked))


def _certificate(model: Solution, space: RequestSpace, signer: Signer) -> tuple[ClientCertificate | None, dict]:
    """The client certificate `model` describes, and its description."""
    issuer = _int(model, space.certificate)
    if issuer < 0:
        return None, {}
    uris, dns = ([value.value(model) for present, value in zip(sans.present, sans.values, strict=True)
                  if _true(model, present)] for sans in (space.sans[n.PeerField.URI], space.sans[n.PeerField.DNS]))
    subject = space.subject.value(model)
    ca = signer.ca(space.cas[issuer] if issuer < len(space.cas) else None)
    leaf = devcerts.issue(ca, "", uris=uris, dns=dns, subject=x509.Name.from_rfc4514_string(subject))
    trusts = sorted(space.trusts_of_ca[space.cas[issuer]]) if issuer < len(space.cas) else []
    described = {"issued by": f"the CA of trust {' / '.join(trusts)}" if trusts else "a CA no policy trusts",
                 "subject": subject} | ({"uri": uris} if uris else {}) | ({"dns": dns} if dns else {})
    return ClientCertificate(leaf.cert_pem, leaf.key_pem), described


def enforced(decision: Decision) -> int:
    """The status the policy decided, whatever the service's mode."""
    return decision.enforced_status if decision.enforced_status is not None else decision.status


def confirm(decision: Decision, status: int, rule: str | None, allowed: bool, what: str) -> None:
    """Fail unless the interpreter's decision is the one the model predicted."""
    got = (enforced(decision), decision.rule, decision.status == 200)
    if got != (status, rule, allowed):
        raise AnalysisError(f"{what}: the model predicted status {status}, rule {rule!r}, "
                            f"reaches upstream {allowed}; the interpreter decided {decision}")


def now() -> int:
    return int(time.time())
