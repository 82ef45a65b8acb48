"""`policyc diff` where only the catalog, an issuer or a trust changes: who gains and who loses,
per service and rule, as catalog users, in every format; and what the model leaves out (an
issuer's keys) reported as `undecided` with its reason, never as no change."""

import json
from pathlib import Path

from policyc.analysis import diff
from policyc.checked import Checked
from policyc.credentials import tokens as devtokens
from tests.analysis.policies import checked, run_cli

POLICY = """
issuer portal {
    url "https://portal.example.com"
    jwks "https://portal.example.com/jwks.json"
    catalog users
}
catalog "catalog"
service payments {
    hosts ["payments.internal"]
    upstream "127.0.0.1:8080"
    allow "team" when member owners(component:payments)
    allow "sre-read" when method == GET and member "group:sre"
}
service ledger {
    hosts ["ledger.internal"]
    upstream "127.0.0.1:8081"
    allow "platform" when member "group:platform"
}
"""

CATALOG = """\
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: platform}
spec: {children: [sre]}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: sre}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: payments-team}
spec: {members: [alice]}
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: {name: alice}
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: {name: bob}
spec: {memberOf: [sre]}
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: {name: carol}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: payments}
spec: {owner: payments-team}
"""


def with_catalog(folder: Path, catalog: str, policy: str = POLICY) -> Checked:
    (folder / "catalog").mkdir(parents=True, exist_ok=True)
    (folder / "catalog" / "org.yaml").write_text(catalog, encoding="utf-8")
    return checked(folder, policy)


def who(found) -> dict[str, set[tuple[str, str, str]]]:
    """Per service, (user, gains or loses, rule)."""
    return {s.name: {(c.user, c.access, c.rule) for c in s.callers} for s in found.services}


def test_a_person_joining_a_group_gains_access_in_every_service_the_group_reaches(tmp_path):
    joined = CATALOG.replace("metadata: {name: carol}", "metadata: {name: carol}\nspec: {memberOf: [sre]}")
    found = diff(with_catalog(tmp_path / "old", CATALOG), with_catalog(tmp_path / "new", joined))
    assert {s.name: s.verdict for s in found.services} == {"payments": "broader", "ledger": "broader"}
    # sre sits inside platform: joining it reaches the ledger too.
    assert who(found) == {"payments": {("user:default/carol", "gains", "sre-read")},
                          "ledger": {("user:default/carol", "gains", "platform")}}
    for service in found.services:
        for caller in service.callers:
            assert caller.change.request["token"]["claims"]["sub"] == "user:default/carol"
            assert (caller.change.old.status, caller.change.new.status) == (403, 200)


def test_a_person_leaving_a_group_and_a_user_deleted_lose_access(tmp_path):
    left = CATALOG.replace("spec: {memberOf: [sre]}\n", "")
    found = diff(with_catalog(tmp_path / "old", CATALOG), with_catalog(tmp_path / "new", left))
    assert who(found) == {"payments": {("user:default/bob", "loses", "sre-read")},
                          "ledger": {("user:default/bob", "loses", "platform")}}
    alice = "apiVersion: backstage.io/v1alpha1\nkind: User\nmetadata: {name: alice}\n---\n"
    deleted = CATALOG.replace(alice, "").replace("members: [alice]", "members: []")
    found = diff(with_catalog(tmp_path / "old2", CATALOG), with_catalog(tmp_path / "new2", deleted))
    assert {s.name: s.verdict for s in found.services} == {"payments": "narrower", "ledger": "equivalent"}
    assert who(found)["payments"] == {("user:default/alice", "loses", "team")}


def test_a_nested_group_moved_and_an_owner_changed(tmp_path):
    unnested = CATALOG.replace("spec: {children: [sre]}", "")
    found = diff(with_catalog(tmp_path / "old", CATALOG), with_catalog(tmp_path / "new", unnested))
    assert {s.name: s.verdict for s in found.services} == {"payments": "equivalent", "ledger": "narrower"}
    assert who(found)["ledger"] == {("user:default/bob", "loses", "platform")}
    # A group moved out also loses by `ent`: the examples show it, beside the users.
    assert any(c.request["token"]["claims"].get("ent") for c in found.services[0].changes)
    owned = CATALOG.replace("spec: {owner: payments-team}", "spec: {owner: user:carol}")
    found = diff(with_catalog(tmp_path / "old2", CATALOG), with_catalog(tmp_path / "new2", owned))
    assert who(found)["payments"] == {("user:default/alice", "loses", "team"), ("user:default/carol", "gains", "team")}
    assert found.verdict == "mixed"


def test_a_component_added_or_an_unread_entity_changes_nothing(tmp_path):
    added = CATALOG + "---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: ledger}\n" \
                      "spec: {owner: user:carol}\n"
    found = diff(with_catalog(tmp_path / "old", CATALOG), with_catalog(tmp_path / "new", added), shortcut=False)
    assert found.verdict == "equivalent" and who(found) == {"payments": set(), "ledger": set()}


def test_audience_and_url_changes_are_analysed(tmp_path):
    audience = POLICY.replace("    catalog users\n", '    catalog users\n    audience "payments"\n')
    found = diff(with_catalog(tmp_path / "old", CATALOG), with_catalog(tmp_path / "new", CATALOG, audience))
    assert found.verdict == "narrower"
    assert {(c.old.status, c.new.status) for s in found.services for c in s.changes} >= {(200, 403)}
    moved = POLICY.replace("https://portal.example.com\"", "https://sso.example.com\"")
    found = diff(with_catalog(tmp_path / "old2", CATALOG), with_catalog(tmp_path / "new2", CATALOG, moved))
    assert found.verdict == "mixed"  # the old url's tokens are refused (401), the new one's admitted
    assert {(c.old.status, c.new.status) for s in found.services for c in s.changes} >= {(200, 401), (401, 200)}


def test_changed_keys_are_reported_as_not_analysed_never_as_no_change(tmp_path):
    rotated = POLICY.replace("portal.example.com/jwks.json", "portal.example.com/keys")
    found = diff(with_catalog(tmp_path / "old", CATALOG), with_catalog(tmp_path / "new", CATALOG, rotated))
    assert found.verdict == "undecided" and found.fails("broader")
    for service in found.services:
        assert service.verdict == "undecided"
        assert service.not_analysed == ["issuer portal (https://portal.example.com): its signing keys differ, "
                                        "and which tokens verify is not analysed"]


def test_every_format_names_the_callers_and_what_is_not_analysed(tmp_path):
    joined = CATALOG.replace("metadata: {name: carol}", "metadata: {name: carol}\nspec: {memberOf: [sre]}")
    with_catalog(tmp_path / "old", CATALOG)
    with_catalog(tmp_path / "new", joined)
    old, new = tmp_path / "old", tmp_path / "new"
    text = run_cli("diff", old, new, expect=0).stdout
    assert "  who: user:default/carol gains access through rule 'sre-read'" in text
    markdown = run_cli("diff", old, new, "--format", "markdown", expect=0).stdout
    assert "- **who**: `user:default/carol` gains access through rule 'platform'" in markdown
    data = json.loads(run_cli("diff", old, new, "--format", "json", expect=0).stdout)
    callers = {s["service"]: [(c["user"], c["access"], c["rule"]) for c in s["callers"]] for s in data["services"]}
    assert callers == {"ledger": [("user:default/carol", "gains", "platform")],
                       "payments": [("user:default/carol", "gains", "sre-read")]}
    with_catalog(tmp_path / "rotated2", CATALOG, POLICY.replace("jwks.json", "keys.json"))
    result = run_cli("diff", old, tmp_path / "rotated2", "--fail-on", "broader", expect=1)
    assert "  not analysed: issuer portal (https://portal.example.com): its signing keys differ" in result.stdout
    data = json.loads(run_cli("diff", old, tmp_path / "rotated2", "--format", "json", expect=0).stdout)
    assert all(s["verdict"] == "undecided" and s["not_analysed"] for s in data["services"])
    markdown = run_cli("diff", old, tmp_path / "rotated2", "--format", "markdown", expect=0).stdout
    assert "- **not analysed**: issuer portal" in markdown


def test_the_report_names_the_callers_and_what_is_not_analysed(tmp_path):
    joined = CATALOG.replace("metadata: {name: carol}", "metadata: {name: carol}\nspec: {memberOf: [sre]}")
    with_catalog(tmp_path / "old", CATALOG)
    with_catalog(tmp_path / "new", joined)
    run_cli("report", tmp_path / "new", "-o", tmp_path / "joined.html", "--diff", tmp_path / "old", expect=0)
    page = (tmp_path / "joined.html").read_text()
    assert "<strong>who</strong>: user:default/carol gains access through rule &#39;sre-read&#39;" in page
    with_catalog(tmp_path / "rotated", CATALOG, POLICY.replace("jwks.json", "keys.json"))
    run_cli("report", tmp_path / "rotated", "-o", tmp_path / "rotated.html", "--diff", tmp_path / "old", expect=0)
    assert "Not analysed: issuer portal (https://portal.example.com): its signing keys differ" in (
        tmp_path / "rotated.html").read_text()


def test_a_jwks_file_with_other_keys_is_not_analysed(tmp_path):
    policy = POLICY.replace('jwks "https://portal.example.com/jwks.json"', 'jwks file "portal.jwks.json"')
    sides = []
    for side in ("old", "new"):
        (tmp_path / side).mkdir()
        key = devtokens.public_jwks(devtokens.generate_key("ES256", kid="portal-1"))
        (tmp_path / side / "portal.jwks.json").write_text(json.dumps(key), encoding="utf-8")
        sides.append(with_catalog(tmp_path / side, CATALOG, policy))
    found = diff(*sides)
    assert {s.verdict for s in found.services} == {"undecided"}
    assert "its signing keys differ" in found.services[0].not_analysed[0]
    assert diff(sides[0], sides[0]).verdict == "equivalent"
