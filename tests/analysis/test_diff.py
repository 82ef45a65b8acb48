"""`policyc diff`: verdicts, the rules and example requests of each change (every one replayed
through the interpreter inside `diff`), the three formats, `--fail-on`, git revisions, and the exit
codes of misplaced options (2) and of a solver the interpreter contradicts (3)."""

import json

from policyc import analysis
from policyc.analysis import diff
from policyc.analysis.witness import AnalysisError
from tests.analysis.policies import API, checked, commit, write
from tests.analysis.policies import run_cli as run

WIDER_READ = API.replace('path glob "/api/v1/**"', 'path glob "/api/**"')


def test_widening_a_glob_is_broader_and_shows_a_newly_allowed_request(tmp_path):
    found = diff(checked(tmp_path / "old", API), checked(tmp_path / "new", WIDER_READ))
    (service,) = found.services
    assert (found.verdict, service.verdict, service.edited) == ("broader", "broader", ["read"])
    assert service.complete and service.changes
    for change in service.changes:
        assert change.access == "gains"
        assert (change.old.reason, change.new.rule) == ("default-deny", "read")
        path = change.request["path"]
        assert path.startswith("/api") and not path.startswith("/api/v1/") and path != "/api/v1"
        assert change.request["token"]["issuer"] == "idp"
    # The example sits just outside the old glob, where a reviewer looks first.
    assert service.changes[0].request["path"].startswith("/api/v2/")


def test_the_same_policy_is_equivalent_even_when_solved(tmp_path):
    policy = checked(tmp_path / "p", API)
    assert diff(policy, policy, shortcut=False).verdict == "equivalent"
    renamed = checked(tmp_path / "r", API.replace('"read"', '"reading"'))
    result = diff(policy, renamed)
    assert result.verdict == "equivalent"
    assert (result.services[0].added, result.services[0].removed) == (["reading"], ["read"])


def test_a_new_deny_is_narrower_and_names_it(tmp_path):
    denied = API.replace('deny "no-admin"', 'deny "no-head" when method == HEAD\n    deny "no-admin"')
    found = diff(checked(tmp_path / "old", API), checked(tmp_path / "new", denied))
    (service,) = found.services
    assert service.verdict == "narrower"
    assert {(c.old.rule, c.new.rule) for c in service.changes} == {("health", "no-head"), ("read", "no-head")}
    assert all(c.request["method"] == "HEAD" for c in service.changes)


def test_moving_access_is_mixed(tmp_path):
    moved = API.replace('path == "/healthz"', 'path == "/health"')
    service = diff(checked(tmp_path / "old", API), checked(tmp_path / "new", moved)).services[0]
    assert service.verdict == "mixed"
    assert {c.access for c in service.changes} == {"gains", "loses"}
    assert {c.request["path"] for c in service.changes} == {"/health", "/healthz"}


def test_status_changes_of_refused_requests(tmp_path):
    # Without the ci issuer its tokens are refused (401) where a rule used to refuse them (403).
    ci = API[API.index("issuer ci"):API.index("}", API.index("issuer ci")) + 1]
    deploy = API[API.index('    allow "deploy"'):API.index("\n", API.index('    allow "deploy"')) + 1]
    without_ci = API.replace(ci, "").replace(deploy, "")
    service = diff(checked(tmp_path / "old", API), checked(tmp_path / "new", without_ci)).services[0]
    assert service.verdict == "narrower"
    statuses = {(c.old.status, c.new.status) for c in service.changes}
    assert (403, 401) in statuses and (200, 401) in statuses


def test_a_removed_host_answers_404(tmp_path):
    more_hosts = API.replace('hosts ["api.internal"]', 'hosts ["api.internal", "api.example.com"]')
    found = diff(checked(tmp_path / "old", more_hosts), checked(tmp_path / "new", API))
    gone = next(s for s in found.services if s.hosts == ["api.example.com"])
    assert (gone.old_service, gone.new_service, gone.verdict) == ("api", None, "narrower")
    assert {c.new.status for c in gone.changes} <= {404, 401, 403}
    assert 404 in {c.new.status for c in gone.changes}


def test_the_limit_keeps_the_verdict_exact(tmp_path):
    moved = API.replace('path == "/healthz"', 'path == "/health"')
    service = diff(checked(tmp_path / "old", API), checked(tmp_path / "new", moved), limit=1).services[0]
    assert (service.verdict, service.complete, len(service.changes)) == ("mixed", False, 1)


def test_cli_formats_and_fail_on(tmp_path):
    old, new = write(tmp_path / "old", API), write(tmp_path / "new", WIDER_READ)
    text = run("diff", old, new, "--limit", "1", expect=0).stdout
    assert "api (api.internal): broader" in text
    assert "newly allowed: 403 default-deny -> 200 allow by rule 'read'" in text
    markdown = run("diff", old, new, "--limit", "1", "--format", "markdown", expect=0).stdout
    assert markdown.startswith("### policyc diff: **broader**") and "| `api` |" in markdown
    data = json.loads(run("diff", old, new, "--limit", "1", "--format", "json", "--fail-on", "any", expect=1).stdout)
    assert data["verdict"] == "broader" and data["services"][0]["changes"][0]["new"]["rule"] == "read"
    run("diff", old, new, "--limit", "1", "--fail-on", "broader", expect=1)
    run("diff", new, old, "--limit", "1", "--fail-on", "broader", expect=0)
    run("diff", old, old, "--fail-on", "any", expect=0)


def test_cli_git_revisions(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    commit(repo, API, "old")
    commit(repo, WIDER_READ, "new")
    monkeypatch.chdir(repo)
    result = run("diff", "HEAD~1", "HEAD", "policies", "--limit", "1", "--fail-on", "broader", expect=1)
    assert "broader" in result.stdout
    assert "no-such-revision" in run("diff", "no-such-revision", "HEAD", "policies", expect=2).stderr


def test_cli_options_after_the_double_dash_are_refused_by_name(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    commit(repo, API, "old")
    monkeypatch.chdir(repo)
    result = run("diff", "HEAD", "HEAD", "--", "policies", "--fail-on", "broader", expect=2)
    assert "--fail-on after `--` is read as a path: put options before `--`" in result.stderr
    assert "--format=markdown after" in run("diff", "HEAD", "HEAD", "--", "policies", "--format=markdown",
                                             expect=2).stderr
    run("diff", "HEAD", "HEAD", "--fail-on", "any", "--", "policies", expect=0)


def test_cli_a_solver_the_interpreter_contradicts_is_an_internal_error(tmp_path, monkeypatch):
    def contradicted(*args):
        raise AnalysisError("GET /x: the model predicted status 200, the interpreter 403")

    monkeypatch.setattr(analysis, "diff", contradicted)
    old = write(tmp_path / "old", API)
    result = run("diff", old, old, expect=3)
    assert result.stdout == "" and "internal error, nothing reported: GET /x" in result.stderr


def test_the_cli_offers_exactly_the_gates_the_diff_knows():
    from policyc.analysis.diff import FAILING
    from policyc.cli import diff_command

    [option] = [p for p in diff_command.params if p.name == "fail_on"]
    assert set(option.type.choices) == set(FAILING)
