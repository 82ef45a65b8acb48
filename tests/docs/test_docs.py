"""Every command shown in README.md and docs/*.md runs and prints what the document shows
(`tests/docs/commands.py`); the few that are not run say why, and are exactly the ones listed here.
Then the convention itself: what counts as a difference, and which documents it refuses."""

import re

import pytest

from tests.docs import commands
from tests.docs.commands import DOCUMENTS, ROOT, DocumentError, not_run, parse, run_document

NAMES = {document: str(document.relative_to(ROOT)) for document in DOCUMENTS}
TEXTS = {NAMES[document]: document.read_text(encoding="utf-8") for document in DOCUMENTS}

# The commands shown but not run (each document says why, beside the command). Adding one is a
# decision: name it here too.
NOT_RUN = {
    "README.md": ["make test", "make demo", "envoy -c out/envoy.yaml",
                  "policyc verify envoy_configs/examples/backstage --examples 100",
                  "envoy -c /etc/policyc/live/envoy.yaml --drain-strategy immediate", "make bench"],
    "docs/operations.md": ["envoy -c /etc/policyc/live/envoy.yaml --drain-strategy immediate --drain-time-s 15",
                           "policyc watch policies/ --to /etc/policyc/live",
                           "curl -s 'localhost:9901/stats?filter=version_text'",
                           'export POLICYC_CATALOG_TOKEN="$(cat /run/secrets/backstage-catalog-token)"',
                           "policyc deploy policies/ --to /etc/policyc/live --catalog "
                           "https://backstage.example.com/api/catalog",
                           "policyc watch policies/ --to /etc/policyc/live --catalog "
                           "https://backstage.example.com/api/catalog \\\n"
                           "    --catalog-period 30 --metrics 127.0.0.1:9464 --confirm 127.0.0.1:9901",
                           "npm ci --prefix tests/ops/backstage --no-audit --no-fund",
                           "cd tests/ops/backstage && node index.js --config /path/to/app-config.yaml",
                           "envoy -c …/envoy.yaml --drain-strategy immediate --drain-time-s 15",
                           "policyc dev-idp --port 8900"],
    "docs/report.md": [".venv/bin/python bench/report.py --rules 1000 --groups 100"],
}


def _without_comment(command: str) -> str:
    return re.sub(r"\s+#.*", "", command)


def _left_out(text: str) -> list[commands.Command]:
    try:
        return not_run(text)
    except DocumentError:
        return []  # test_commands_print_what_the_document_shows says what is wrong


@pytest.mark.parametrize("name", TEXTS)
def test_commands_print_what_the_document_shows(name, tmp_path):
    failures = run_document(TEXTS[name], name, tmp_path)
    assert not failures, "\n\n".join(failures)


def test_the_commands_not_run_are_the_listed_ones():
    left_out = {name: [_without_comment(c.text) for c in _left_out(text)] for name, text in TEXTS.items()}
    assert {name: found for name, found in left_out.items() if found} == NOT_RUN


def check(text: str, work) -> list[str]:
    return run_document(text, "doc.md", work)


def test_a_difference_in_the_output_is_located_and_shown(tmp_path):
    [failure] = check("intro\n\n```console\n$ echo one; echo two\none\n3\n```\n", tmp_path)
    assert failure.startswith("doc.md:4: `echo one; echo two` printed otherwise (exit 0):")
    assert "-3\n+two" in failure


def test_only_hashes_times_and_temporary_folders_may_differ(tmp_path):
    shown = ("```console\n$ echo deployed $(printf %016x $RANDOM) at $(date -u +%FT%T.%3NZ) in $PWD\n"
             "deployed 5facc70ce3e98aeb at 2026-11-28T21:08:41.725Z in /tmp/pytest-of-someone\n```\n")
    assert check(shown, tmp_path / "alike") == []
    assert check(shown.replace("deployed 5", "written 5"), tmp_path / "other")


def test_output_goes_in_the_order_written_from_both_streams(tmp_path):
    assert check("```console\n$ echo out; echo err >&2; echo out\nout\nerr\nout\n```\n", tmp_path) == []


def test_usage_and_internal_errors_fail_even_when_shown(tmp_path):
    [failure] = check("```console\n$ echo usage; exit 2\nusage\n```\n", tmp_path / "usage")
    assert "exited 2" in failure
    assert check("```console\n$ echo gate; exit 1\ngate\n```\n", tmp_path / "gate") == []


def test_a_command_shown_without_output_must_succeed(tmp_path):
    [failure] = check("```sh\n# a comment line\ntrue\nfalse    # fails\n```\n\n```console\n$ true\n```\n", tmp_path)
    assert failure.startswith("doc.md:4: `false    # fails` exited 1")


def test_directives_set_up_leave_out_and_compare_excerpts(tmp_path):
    text = ("<!-- doctest: setup\necho hi > greeting\n-->\n"
            "<!-- doctest: not run `sleep`: it would take too long -->\n"
            "```console\n$ cat greeting\nhi\n$ sleep 600\n```\n\n"
            "<!-- doctest: excerpt of tests/golden/diagnostics/five_mistakes/expected.err -->\n"
            "```\n   |\n13 |     allow \"write\" when issuer backstag and path glob \"/api/**/x**\"\n```\n")
    assert check(text, tmp_path) == []
    assert [c.not_run for c in not_run(text)] == ["it would take too long"]
    [failure] = check(text.replace("13 |", "12 |"), tmp_path / "again")
    assert failure == "doc.md:12: the block is not an excerpt of tests/golden/diagnostics/five_mistakes/expected.err"


def test_a_failing_setup_is_reported(tmp_path):
    [failure] = check("<!-- doctest: setup\nfalse\ntrue\n-->\n```sh\ntrue\n```\n", tmp_path)
    assert failure.startswith("doc.md:5: setup exited 1")


@pytest.mark.parametrize("text, error", [
    pytest.param("<!-- doctest: not run `make`: slow -->\n```sh\ntrue\n```\n",
                 "no command of the next block starts with `make`", id="not-run-matches-nothing"),
    pytest.param("<!-- doctest: skip -->\n```sh\ntrue\n```\n", "unknown directive `doctest: skip`", id="unknown"),
    pytest.param("<!-- doctest: setup\ntrue\n-->\nprose\n```sh\ntrue\n```\n",
                 "a directive must stand right before its block", id="away-from-its-block"),
    pytest.param("```sh\ntrue\n```\n<!-- doctest: setup\ntrue\n-->\n", "a directive with no block after it",
                 id="no-block"),
    pytest.param("```sh\n$ true\n```\n", "a prompt in a shell block", id="prompt-in-sh"),
    pytest.param("```console\noutput\n$ true\n```\n", "output before the first `$ ` prompt", id="no-prompt"),
])
def test_documents_that_break_the_convention_are_refused(text, error):
    with pytest.raises(DocumentError, match=re.escape(error)):
        parse(text)


def test_absolute_folders_are_kept_in_the_scratch_folder(tmp_path):
    text = "```console\n$ mkdir -p /etc/policyc/live && cd /etc/policyc/live && pwd\n/etc/policyc/live\n```\n"
    assert check(text, tmp_path) == []
    assert (tmp_path / "etc" / "policyc" / "live").is_dir()


def test_a_command_that_hangs_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(commands, "COMMAND_TIMEOUT_S", 0.5)
    [failure] = check("```sh\nsleep 60 & wait\n```\n", tmp_path)
    assert "exited 124" in failure and "stopped after 0.5 s" in failure
