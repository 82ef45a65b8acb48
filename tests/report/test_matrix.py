"""The access matrix against the interpreter: every cell's example requests, and for `always` and
`never` cells several more requests of the cell, are decided by `policyc.interpret` as the cell says."""

from pathlib import Path

import pytest

from policyc.analysis import witness
from policyc.analysis.matrix import ALWAYS, GROUP, NEVER, SOMETIMES, USER, Matrix, endpoint
from policyc.pipeline import load_and_check
from tests.analysis.policies import API, checked

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"


@pytest.fixture(scope="module")
def example():
    pipeline = load_and_check([str(EXAMPLE)])
    assert pipeline.ok
    matrix = Matrix(pipeline.checked)
    services = {name: matrix.service_matrix(service) for name, service in pipeline.checked.services.items()}
    return pipeline.checked, matrix, services


def _reached(checked, example: witness.Example, signer: witness.Signer, now: int) -> bool:
    """Whether the interpreter lets the policy allow `example` (a dry-run service's policy decision)."""
    return witness.enforced(witness.replay(checked, example, signer, now)) == 200


def test_every_cell_agrees_with_the_interpreter(example):
    checked, matrix, services = example
    signer, now = matrix.analyzer.signer, matrix.analyzer.now
    verdicts = set()
    for name, found in services.items():
        for (r, c), cell in found.cells.items():
            verdicts.add(cell.verdict)
            where = f"{name}: {found.rows[r].label} × {found.columns[c].label}"
            if cell.allowed:
                assert _reached(checked, cell.allowed.example, signer, now), where
            if cell.denied:
                assert not _reached(checked, cell.denied.example, signer, now), where
            assert (cell.allowed is not None) == (cell.verdict != NEVER), where
            assert (cell.denied is not None) == (cell.verdict == SOMETIMES), where
            if cell.verdict in (ALWAYS, NEVER):
                samples = matrix.samples(checked.services[name], found.rows[r], found.columns[c], 3)
                assert samples, where
                for sample in samples:
                    assert _reached(checked, sample.example, signer, now) == (cell.verdict == ALWAYS), where
    assert verdicts == {ALWAYS, SOMETIMES, NEVER}


def _verdicts(found, column_label: str) -> dict[str, str]:
    c = next(i for i, column in enumerate(found.columns) if column.label == column_label)
    return {row.label: found.cells[r, c].verdict for r, row in enumerate(found.rows)}


def test_the_example_reads_as_its_policies_say(example):
    _, _, services = example
    payments = services["payments"]
    health = _verdicts(payments, 'any method == "/healthz"')
    assert health["no token, no certificate"] == ALWAYS  # public; the contractor deny needs a token
    reads = _verdicts(payments, "GET HEAD OPTIONS any path")
    # sre-read and team-read: SRE and the owners (payments-team, alice) read everything but /debug/
    # (denied by no-debug): a column speaks for every path of its tests; bob is in SRE.
    assert reads["group:default/sre"] == reads["group:default/payments-team"] == SOMETIMES
    assert reads["user:default/alice"] == reads["user:default/bob"] == SOMETIMES
    column = next(c for c, found in enumerate(payments.columns) if found.label == "GET HEAD OPTIONS any path")
    sre = next(r for r, row in enumerate(payments.rows) if row.label == "group:default/sre")
    assert payments.cells[sre, column].denied.example.description["path"].startswith("/debug/")
    # Everyone reads /healthz at least (the public health rule); callers without a token only that.
    assert reads["user:default/carol"] == reads["group:default/support"] == SOMETIMES
    assert reads["no token, no certificate"] == SOMETIMES
    assert payments.cells[0, column].allowed.rule == "health"
    assert _verdicts(payments, 'any method prefix "/debug/"')["group:default/sre"] == NEVER
    # A `never` cell names the deny rules its row does not rule out: the contractor deny needs a
    # token, so it is not named for callers without one.
    debug = next(c for c, column in enumerate(payments.columns) if column.path == "/debug/x")
    assert payments.cells[0, debug].denies == ["no-debug"]
    assert payments.rows[0].label == "no token, no certificate"
    rows = {row.kind for row in payments.rows}
    assert {GROUP, USER} <= rows


def test_columns_are_the_rules_method_and_path_tests(tmp_path):
    found = checked(tmp_path, API)
    labels = [endpoint(rule, found).label for rule in found.services["api"].rules]
    assert labels == ['any method prefix "/admin"', 'any method == "/healthz"', 'GET HEAD glob "/api/v1/**"',
                      'POST == "/deploy"']
    matrix = Matrix(found).service_matrix(found.services["api"])
    assert [c.path for c in matrix.columns] == ["/admin/x", "/api/v1/x", "/deploy", "/healthz"]
    deploy = _verdicts(matrix, 'POST == "/deploy"')
    assert deploy == {"no token, no certificate": NEVER, "issuer ci": SOMETIMES, "issuer idp": NEVER,
                      'token.roles contains "deployer"': SOMETIMES}
