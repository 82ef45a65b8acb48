"""Generated policy pairs: every example request `diff` shows is replayed through the interpreter
and gets the decisions it claims (`diff` itself fails otherwise); `diff(P, P)` is equivalent even
when solved; and no service's verdict hides a change that a generated request to it shows.

A pair differs in one rule of one service, or only in the catalog (one change of
`strategies.CATALOG_CHANGES`), in one issuer (its audiences, its url, its keys, or `catalog users`
set), or in the listener's trust (added, removed, or another CA)."""

from dataclasses import replace

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from policyc import nodes as n
from policyc.analysis import diff
from policyc.analysis.diff import catalog_users
from policyc.analysis.witness import enforced
from policyc.checked import Checked
from policyc.interpret import evaluate
from policyc.pipeline import load_and_check
from policyc.semantics.request import RawRequest
from policyc.source import Span
from tests.property import strategies
from tests.property.strategies import (
    AUDIENCES,
    CATALOG_CHANGES,
    CATALOG_GROUPS,
    CATALOG_USERS,
    GROUPS,
    ISSUERS,
    NOW,
    OWNED,
    check_clean,
    mint,
    trusted,
)
from tests.property.test_semantics import with_service

# Each example asks the solver a few dozen questions.
EXAMPLES = settings(max_examples=25, deadline=None)
# Pairs differ in one of four ways, each in services of their own.
PAIRS = settings(max_examples=80, deadline=None)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return strategies.write_world(tmp_path_factory.mktemp("analysis-world"))


@st.composite
def rule_change(draw, gen) -> n.PolicySet:
    """The policy with one rule of one service added, dropped or replaced."""
    service = draw(st.sampled_from(gen.expanded.services))
    at = draw(st.integers(0, len(service.rules) - 1))
    replaced = service.rules[at]  # a template's rule is replaced as the template would be edited
    rule = replace(draw(strategies.rules(gen.vocabulary(), name=replaced.name)), template=replaced.template)
    rules = draw(st.sampled_from([
        service.rules[:at] + (rule,) + service.rules[at + 1:],
        service.rules[:at] + service.rules[at + 1:] or (rule,),
        service.rules + (replace(rule, name="added", template=None),),  # the service's own rule
    ]))
    return with_service(gen.expanded, service.name, lambda s: replace(s, rules=rules))


def with_items(policy_set: n.PolicySet, change) -> n.PolicySet:
    """The (one-file) policy set with its items replaced by `change(items)`."""
    (file,) = policy_set.files
    return n.PolicySet((replace(file, items=tuple(change(file.items))),))


@st.composite
def catalog_reader(draw, policy_set: n.PolicySet, here) -> tuple[n.PolicySet, str]:
    """The policy with a rule on `member` of a group or of an owner in one service, alone or
    after its rules (and, where it had none, its first issuer marked `catalog users` and the
    catalog), and that service: the generated rules read the catalog too seldom for its changes
    to show."""
    service = draw(st.sampled_from(policy_set.services))
    atom = draw(st.one_of(st.sampled_from(GROUPS).map(n.Member), st.sampled_from(OWNED).map(n.MemberOwners)))
    rule = n.Rule(draw(st.sampled_from(n.Effect)), False, "reads-catalog", atom)
    # Alone, the rule decides every request to its service: a change of who it admits shows.
    kept = service.rules if draw(st.booleans()) else ()
    reading = with_service(policy_set, service.name, lambda s: replace(s, rules=(*kept, rule)))
    if reading.catalogs:
        return reading, service.name
    first = reading.issuers[0]
    marked = replace(first, settings=(*first.settings, n.CatalogUsers()))
    return with_items(reading, lambda items: [n.Catalog("catalog", here), *(marked if i is first else i
                                                                            for i in items)]), service.name


@st.composite
def catalog_change(draw, policy_set: n.PolicySet) -> n.PolicySet:
    folder = f"catalogs/{draw(st.sampled_from(list(CATALOG_CHANGES)))}"
    return with_items(policy_set, lambda items: [replace(i, path=folder) if isinstance(i, n.Catalog) else i
                                                  for i in items])


@st.composite
def issuer_change(draw, policy_set: n.PolicySet, here) -> n.PolicySet:
    """One issuer with other audiences, another url, another's keys, or marked `catalog users`."""
    issuer = draw(st.sampled_from(policy_set.issuers))
    settings = list(issuer.settings)
    match draw(st.sampled_from(["audiences", "url", "keys", "catalog users"])):
        case "audiences":
            audiences = draw(st.lists(st.sampled_from(AUDIENCES), unique=True, max_size=2))
            settings = [s for s in settings if not isinstance(s, n.Audience)]
            settings += [n.Audience(tuple(audiences))] if audiences else []
        case "url":
            settings = [n.IssuerUrl(f"{s.url}/moved") if isinstance(s, n.IssuerUrl) else s for s in settings]
        case "keys":
            other = draw(st.sampled_from([p.name for p in ISSUERS if p.name != issuer.name]))
            settings = [n.JwksFile(f"keys/{other}.jwks.json", here) if isinstance(s, n.JwksFile) else s
                        for s in settings]
        case _:
            settings += [] if issuer.catalog_users else [n.CatalogUsers()]
    changed = replace(issuer, settings=tuple(dict.fromkeys(settings)))
    catalog = [] if policy_set.catalogs or not changed.catalog_users else [n.Catalog("catalog", here)]
    return with_items(policy_set, lambda items: [*catalog, *(changed if i is issuer else i for i in items)])


def with_trust(policy_set: n.PolicySet, ca: str | None, here) -> n.PolicySet:
    """The policy set behind a TLS listener that trusts `ca` (None: as it is)."""
    return policy_set if ca is None else with_items(policy_set, lambda items: [*trusted(here, ca), *items])


@st.composite
def policy_pairs(draw, world, gen):
    """The generated policy `gen` (or it behind a TLS listener) and the same with one rule, the
    catalog, an issuer or the trust changed; and the service whose rule reads the catalog, for a
    catalog change."""
    here = Span(world.policy_path, 1, 1, 1, 1)
    # A service an annotated component asks for comes from its own catalog folder, which the
    # catalog, issuer and trust changes below do not keep in step (its `member` rules need a
    # `catalog users` issuer): such a policy gets a rule change only.
    kinds = ["rule"] if gen.catalog else ["rule", "catalog", "issuer", "trust"]
    kind = draw(st.sampled_from(kinds), label="change")
    event(f"change: {kind}")
    if kind == "rule":
        return gen.checked, check_clean(draw(rule_change(gen))), None
    base = gen.expanded
    if kind in ("catalog", "issuer") and not base.issuers:  # one to change, or to name catalog users
        base = with_items(base, lambda items: [n.Issuer("backstage", (
            n.IssuerUrl(ISSUERS[0].url), n.JwksFile(f"keys/{ISSUERS[0].name}.jwks.json", here))), *items])
    match kind:
        case "catalog":
            base, reader = draw(catalog_reader(base, here))
            return check_clean(base), check_clean(draw(catalog_change(base))), reader
        case "issuer":
            return check_clean(base), check_clean(draw(issuer_change(base, here))), None
    before, after = draw(st.sampled_from([(None, "mesh"), ("mesh", None), ("mesh", "other")]))
    return check_clean(with_trust(base, before, here)), check_clean(with_trust(base, after, here)), None


def refused_tokens(*decisions) -> bool:
    """Whether every decision is the token check's (401, 403) and one is for no audience reason."""
    return (all(d.service is None and d.status in (401, 403) for d in decisions)
            and any(d.detail != "Audiences in Jwt are not allowed" for d in decisions))


def routed(found, *decisions):
    """The comparison of the service (or moved hosts) that decided the request on either side:
    the proxy routes by the target's authority when it has one, not by the Host line. None where
    neither side routed it (the token check refused it first, or no service serves its host)."""
    names = [d.service for d in decisions]
    if names == [None, None]:
        return None
    return next((s for s in found.services
                 if all(name is None or name == side for name, side in zip(names, (s.old_service, s.new_service),
                                                                             strict=True))), None)


def as_catalog_user(data, old: Checked, new: Checked, request: RawRequest) -> tuple[RawRequest, dict | None]:
    """`request` with its token replaced by one of an issuer marked `catalog users` whose `sub`
    is a catalog user (and, sometimes, `ent` some groups), and those claims; as it is where no
    issuer is so marked."""
    marked = sorted({(name, i.url, i.audiences) for c in (old, new) for name, i in c.issuers.items()
                     if i.catalog_users and name in old.issuers})
    if not marked:
        return request, None
    name, url, audiences = data.draw(st.sampled_from(marked), label="catalog issuer")
    claims = {"iss": url, "iat": NOW, "exp": NOW + 3600, "sub": data.draw(st.sampled_from(CATALOG_USERS), label="sub")}
    claims |= {"aud": audiences[0]} if audiences else {}
    if data.draw(st.booleans(), label="with ent"):
        claims["ent"] = data.draw(st.lists(st.sampled_from(CATALOG_GROUPS), unique=True, max_size=2), label="ent")
    headers = [h for h in request.headers if h[0].lower() != "authorization"]
    return replace(request, headers=(*headers, ("authorization", f"Bearer {mint(claims, name)}"))), claims


def named_users(old: Checked, new: Checked, diffed) -> set[str]:
    return (catalog_users(old, old.services.get(diffed.old_service))
            | catalog_users(new, new.services.get(diffed.new_service)))


@PAIRS
@given(data=st.data())
def test_examples_replay_and_verdicts_are_exact(world, data):
    gen = data.draw(strategies.checked_policy(world), label="policy")
    old, new, reader = data.draw(policy_pairs(world, gen), label="pair")
    found = diff(old, new, limit=2)
    for service in found.services:
        event(f"verdict: {service.verdict}")
    if old.catalog != new.catalog and old.issuers == new.issuers:
        event(f"catalog changed alone: {found.verdict}")
    services = sorted(old.services)
    for i in range(12):  # to every service in turn; every other one from a catalog user, to the reader
        service = reader if i % 2 and reader else services[i % len(services)]
        request = data.draw(strategies.requests(gen, service), label="request")
        claims = None
        if i % 2:
            request, claims = as_catalog_user(data, old, new, request)
        before, after = evaluate(old, request, NOW), evaluate(new, request, NOW)
        diffed = routed(found, before, after)
        verdict = diffed.verdict if diffed else None
        gains = before.status != 200 and after.status == 200
        loses = before.status == 200 and after.status != 200
        if gains:
            assert verdict in ("broader", "mixed", "undecided"), (request, before, after)
        if loses:
            assert verdict in ("narrower", "mixed", "undecided"), (request, before, after)
        # A request neither side routes is refused either way: by the token check first (401,
        # 403), which an issuer change changes, else 404; `diff` lists served hosts only. A token both
        # token checks refuse, for reasons besides the audience (an expired one, say), is outside
        # the model (docs/analysis.md, Bounds).
        if enforced(before) != enforced(after) and verdict is not None and not refused_tokens(before, after):
            assert verdict != "equivalent", (request, before, after)
        # A catalog user the catalog alone places, who gains or loses, is named with the rule.
        if (gains or loses) and claims and "ent" not in claims and verdict != "undecided" \
                and claims["sub"] in named_users(old, new, diffed):
            access, rule = ("gains", after.rule or after.reason) if gains else ("loses", before.rule or before.reason)
            assert (claims["sub"], access, rule) in {(c.user, c.access, c.rule) for c in diffed.callers}, (
                request, before, after, diffed.callers)


@EXAMPLES
@given(data=st.data())
def test_a_policy_is_equivalent_to_itself(world, data):
    gen = data.draw(strategies.checked_policy(world), label="policy")
    assert diff(gen.checked, gen.checked, shortcut=False).verdict == "equivalent"


# Three services that read the catalog each their own way, for every change of `CATALOG_CHANGES`.
READERS = """issuer backstage {
    url "https://backstage.example.com/api/auth"
    jwks file "keys/backstage.jwks.json"
    catalog users
}
catalog "CATALOG"
service payments {
    hosts ["payments.internal"]
    upstream "127.0.0.1:8080"
    allow "sre" when member "group:default/sre"
    allow "team" when method == POST and member owners(component:payments)
}
service ledger {
    hosts ["ledger.internal"]
    upstream "127.0.0.1:8081"
    allow "owner" when member owners(component:ledger)
}
service docs {
    hosts ["docs.internal"]
    upstream "127.0.0.1:8082"
    deny "not-platform" when not member "platform"
    allow "read" when method == GET
}
"""


def readers(world, catalog: str) -> Checked:
    path = world.root / f"readers-{catalog.replace('/', '-')}.policy"
    path.write_text(READERS.replace("CATALOG", catalog), encoding="utf-8")
    pipeline = load_and_check([str(path)])
    assert pipeline.ok, pipeline.diagnostics
    return pipeline.checked


@pytest.mark.parametrize("change", list(CATALOG_CHANGES))
def test_every_catalog_change_is_seen_in_every_service_and_by_user(world, change):
    old, new = readers(world, "catalog"), readers(world, f"catalogs/{change}")
    found = diff(old, new)
    seen = set()
    for diffed in found.services:
        callers = {(c.user, c.access, c.rule) for c in diffed.callers}
        for user, method in ((u, m) for u in CATALOG_USERS for m in ("GET", "POST")):
            token = mint({"iss": ISSUERS[0].url, "iat": NOW, "exp": NOW + 3600, "sub": user}, ISSUERS[0].name)
            request = RawRequest(method, "/x", diffed.hosts[0], (("authorization", f"Bearer {token}"),), "10.0.0.1")
            before, after = evaluate(old, request, NOW), evaluate(new, request, NOW)
            if before.status != 200 and after.status == 200:
                assert diffed.verdict in ("broader", "mixed") and (user, "gains", after.rule) in callers
                seen.add((diffed.name, user, "gains"))
            elif before.status == 200 and after.status != 200:
                assert diffed.verdict in ("narrower", "mixed") and (user, "loses", before.rule) in callers
                seen.add((diffed.name, user, "loses"))
        # Every user the diff names is one these requests show.
        assert {(diffed.name, user, access) for user, access, _ in callers} <= seen
    assert bool(seen) == (change != "component")  # a new component no rule reads changes nothing
