"""Services from the catalog: a Component or an API annotated `policyc.dev/template` becomes a
service using that template, with its hosts, upstream and arguments from annotations (values, never
text), its owner from `spec.owner` and `dry-run` when it is experimental; it goes through every
check a written service does, and bad annotations are located in the catalog (file or live
entity). The golden file tests/golden/diagnostics/catalog_services/ shows every diagnostic."""

import json

import yaml

from policyc import nodes as n
from policyc.analysis.locked import locked_diagnostics
from policyc.catalog import LiveEntities
from policyc.interpret import evaluate
from policyc.pipeline import load_and_check
from policyc.semantics.request import RawRequest

POLICY = '''
issuer backstage {
    url "https://backstage.example.com/api/auth"
    jwks "https://backstage.example.com/api/auth/.well-known/jwks.json"
    catalog users
}

catalog "catalog"

template team_api(owner: ref, entity: ref, headers: list = ["a"], health: path = "/healthz") {
    LOCK deny "no-debug" when path prefix "/debug/"
    allow public "health" when method == GET and path == $health
    allow "team" when member $owner or member owners($entity)
    allow public "tagged" when header "x-tag" in $headers
}
'''

TEAM = {"apiVersion": "backstage.io/v1alpha1", "kind": "Group", "metadata": {"name": "payments-team"},
        "spec": {"type": "team", "children": []}}


def component(name: str = "ledger", lifecycle: str = "production", kind: str = "Component", **annotations) -> dict:
    found = {"policyc.dev/template": "team_api", "policyc.dev/hosts": f"{name}.internal",
             "policyc.dev/upstream": "127.0.0.1:8083"}
    found.update({key.replace("__", "/").replace("_", "."): value for key, value in annotations.items()})
    return {"apiVersion": "backstage.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "annotations": {k: v for k, v in found.items() if v is not None}},
            "spec": {"type": "service", "lifecycle": lifecycle, "owner": "payments-team"}}


def load(tmp_path, *entities: dict, policy: str = POLICY, locked: bool = False):
    (tmp_path / "catalog").mkdir(exist_ok=True)
    (tmp_path / "catalog" / "entities.yaml").write_text(yaml.safe_dump_all([TEAM, *entities], sort_keys=False),
                                                        encoding="utf-8")
    (tmp_path / "main.policy").write_text(policy.replace("LOCK ", "locked " if locked else ""), encoding="utf-8")
    return load_and_check([str(tmp_path / "main.policy")])


def decide(pipeline, host: str, path: str = "/", headers=()):
    return evaluate(pipeline.checked, RawRequest("GET", path, host, tuple(headers), "10.0.0.1"), 0)


def test_an_annotated_component_becomes_a_service_using_its_template(tmp_path):
    pipeline = load(tmp_path, component(policyc_dev__upstream="127.0.0.1:8083 http2"))
    assert pipeline.ok, pipeline.diagnostics
    service = pipeline.checked.services["ledger"]
    assert service.hosts == ("ledger.internal",) and service.upstream == "127.0.0.1:8083"
    assert service.upstream_protocol is n.UpstreamProtocol.HTTP2 and service.mode is n.Mode.ENFORCE
    rules = {r.name: r for r in service.rules}
    assert sorted(rules) == ["team_api/health", "team_api/no-debug", "team_api/tagged", "team_api/team"]
    # `owner` is spec.owner, `entity` the component itself: its owners are spec.owner's members.
    assert rules["team_api/team"].expr == n.Or((n.Member("group:default/payments-team"),
                                                n.MemberOwners("component:default/ledger")))
    # The use is located at the annotation, the service at metadata.name, in the catalog file.
    assert rules["team_api/team"].instance.path.endswith("entities.yaml")
    assert decide(pipeline, "ledger.internal", "/healthz").status == 200
    assert decide(pipeline, "ledger.internal", "/debug/x").rule == "team_api/no-debug"
    # The set as written has no such service: the catalog made it.
    assert "ledger" not in [s.name for s in pipeline.checked.policy_set.services]


def test_arguments_are_values_never_policy_text(tmp_path):
    sneaky = 'a" or path prefix "/'
    pipeline = load(tmp_path, component(policyc_dev__args_headers=json.dumps([sneaky]),
                                        policyc_dev__args_health="/ready"))
    assert pipeline.ok, pipeline.diagnostics
    rules = {r.name: r for r in pipeline.checked.services["ledger"].rules}
    assert rules["team_api/tagged"].expr == n.HeaderTest("x-tag", n.Op.IN, (sneaky,))
    assert decide(pipeline, "ledger.internal", "/anything").status == 403
    assert decide(pipeline, "ledger.internal", "/x", [("x-tag", sneaky)]).status == 200
    assert decide(pipeline, "ledger.internal", "/ready").rule == "team_api/health"


def test_an_experimental_component_runs_in_dry_run_and_may_not_weaken_a_locked_deny(tmp_path):
    pipeline = load(tmp_path, component(lifecycle="experimental"))
    assert pipeline.ok, pipeline.diagnostics
    assert pipeline.checked.services["ledger"].mode is n.Mode.DRY_RUN
    locked = load(tmp_path, component(lifecycle="experimental"), locked=True)
    [weakened] = locked_diagnostics(locked.checked)
    assert weakened.code == "template/weakens-locked"
    assert (weakened.span.path.endswith("entities.yaml"), weakened.span.line) == (True, 19)
    assert "ledger" in weakened.message


def test_deleting_the_entity_retires_its_service(tmp_path):
    assert "ledger" in load(tmp_path, component(), component("audit")).checked.services
    pipeline = load(tmp_path, component("audit"))
    assert pipeline.ok and "ledger" not in pipeline.checked.services
    assert decide(pipeline, "ledger.internal").reason == "no-service"


def test_a_generated_service_clashing_with_a_written_one_is_an_error(tmp_path):
    written = POLICY + 'service ledger {\n    hosts "l.internal"\n    upstream "127.0.0.1:1"\n}\n'
    pipeline = load(tmp_path, component(), policy=written)
    assert [d.code for d in pipeline.diagnostics if d.is_error] == ["check/duplicate-service"]
    assert pipeline.diagnostics[0].span.path.endswith("entities.yaml")
    clash = load(tmp_path, component(), component("other", policyc_dev__hosts="ledger.internal"))
    assert [d.code for d in clash.diagnostics if d.is_error] == ["check/duplicate-host"]


def test_bad_annotations_are_located_and_make_no_service(tmp_path):
    pipeline = load(tmp_path, component(policyc_dev__hosts="Ledger.internal"),
                    component("audit", policyc_dev__upstream=None, kind="API"))
    found = [(d.code, d.span.line) for d in pipeline.diagnostics if d.is_error]
    assert found == [("catalog/bad-annotation", 15), ("catalog/bad-annotation", 27)], found
    assert not pipeline.ok and "ledger" not in pipeline.checked.services


def test_a_name_that_cannot_name_a_service_is_an_error(tmp_path):
    pipeline = load(tmp_path, component("-ledger.", policyc_dev__hosts="ledger.internal"))
    assert [(d.code, d.span.line) for d in pipeline.diagnostics if d.is_error] == [("catalog/bad-annotation", 12)]


def test_live_entities_are_located_at_their_url(tmp_path):
    (tmp_path / "main.policy").write_text(POLICY.replace("LOCK ", ""), encoding="utf-8")
    live = LiveEntities("https://backstage.example/api/catalog",
                        (TEAM, component(policyc_dev__args_health="healthz")))
    pipeline = load_and_check([str(tmp_path / "main.policy")], live=live)
    [problem] = [d for d in pipeline.diagnostics if d.is_error]
    assert problem.code == "catalog/bad-annotation"
    assert problem.span.path == "https://backstage.example/api/catalog#component:default/ledger"
    good = LiveEntities(live.url, (TEAM, component()))
    assert load_and_check([str(tmp_path / "main.policy")], live=good).checked.services["ledger"].hosts \
        == ("ledger.internal",)
