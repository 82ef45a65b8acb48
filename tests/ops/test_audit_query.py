"""The questions `policyc audit` answers, on a real Envoy's log of the example's requests
(tests/docs/access.log): a caller's requests in a window, who reached a service or path, every
denial and would-deny, what one rule allowed; in table, JSON and CSV. Lines are skipped unparsed
when they lack a query's text, which must never drop a matching one."""

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.cli import main
from policyc.ops.audit import ALLOWED, DENIED, WOULD_DENY, Query, Reader

LOG = Path(__file__).parents[1] / "docs" / "access.log"
ALL = list(Reader().events(LOG.read_text().splitlines()))


def audit(*args) -> str:
    result = CliRunner().invoke(main, ["audit", str(LOG), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


QUERIES = [
    Query(caller="user:default/carol"),
    Query(caller="anonymous"),
    Query(caller="spiffe://example.org/ns/ci/sa/deploy-bot"),
    Query(service="payments", path="/api/v1/"),
    Query(rule="payments/team-write", verdicts=frozenset({ALLOWED})),
    Query(rule="no-internal"),
    Query(verdicts=frozenset({DENIED, WOULD_DENY})),
]


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_a_query_keeps_exactly_the_matching_events(query):
    expected = [event for event in ALL if query.matches(event)]
    assert expected, "a query that matches nothing proves nothing"
    assert list(Reader().events(LOG.read_text().splitlines(), query)) == expected


def test_a_callers_requests_in_a_window():
    carol = [e for e in ALL if e.caller == "user:default/carol"]
    since, until = carol[1].time, carol[-1].time
    found = json.loads(audit("--caller", "user:default/carol", "--since", since, "--until", until, "--format", "json"))
    assert [e["time"] for e in found["events"]] == [e.time for e in carol[1:-1] if since <= e.time < until]
    assert [row["caller"] for row in found["callers"]] == ["user:default/carol"]


def test_every_denial_and_would_deny_as_csv_with_trace_ids():
    rows = list(csv.DictReader(io.StringIO(audit("--denials", "--format", "csv"))))
    assert {row["verdict"] for row in rows} == {DENIED, WOULD_DENY}
    assert len(rows) == sum(e.verdict in (DENIED, WOULD_DENY) for e in ALL)
    # Only a request the proxy refuses while still reading it (400) has neither id.
    assert all(len(row["trace_id"]) == 32 and row["request_id"] for row in rows if row["reason"] != "bad-request")


def test_what_one_rule_allowed_and_who_reached_a_path():
    table = audit("--rule", "payments/team-write", "--verdict", "allowed")
    assert "team-write" in table and "default-deny" not in table
    assert {e["path"] for e in json.loads(audit("--path", "/pages/", "--format", "json"))["events"]} == \
        {"/pages/intro"}


def test_audit_without_a_subcommand_is_events_and_bad_times_are_usage_errors():
    assert audit("--service", "docs") == CliRunner().invoke(main, ["audit", "events", str(LOG), "--service",
                                                                   "docs"]).stdout
    result = CliRunner().invoke(main, ["audit", str(LOG), "--until", "soon"])
    assert result.exit_code == 2 and "--until" in result.output
