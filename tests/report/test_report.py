"""`policyc report` as HTML: policy text is escaped wherever it lands, warnings, findings and the
changes since `--diff OLD` are on the page, so is what `--usage LOG` shows unused, and the command
writes nothing on errors."""

import re
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from policyc.cli import main
from tests.analysis.policies import API, ISSUERS, commit, write

# Header values, claim values and comments hold any text: it must stay text on the page.
HOSTILE = ISSUERS + """
service api {
    hosts ["api.internal"]
    upstream "127.0.0.1:8080"
    allow "x" when header "x-a" == "<script>alert(1)</script>" and token.name == "\\"><img src=x>" # <b>c</b>
    allow "open" when path prefix "/open/"
}
"""


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def _report(tmp_path, text: str, *extra: str):
    folder = write(tmp_path / "policies", text)
    output = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", str(folder), "-o", str(output), *extra])
    return result, output


def test_policy_text_is_escaped(tmp_path):
    result, output = _report(tmp_path, HOSTILE)
    assert result.exit_code == 0, result.output
    page = output.read_text()
    parser = Tags()
    parser.feed(page)
    assert parser.tags.count("script") == 1 and "img" not in parser.tags and "b" not in parser.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "&lt;b&gt;c&lt;/b&gt;" in page and "&#34;&gt;&lt;img src=x&gt;" in page


def test_warnings_findings_and_links(tmp_path):
    result, output = _report(tmp_path, HOSTILE)
    assert result.exit_code == 0, result.output
    page = output.read_text()
    # `open` admits callers without a token and is not marked public: a warning of check, a finding of analyze.
    assert "warning[check/anonymous-allow]" in page
    assert 'class="finding searchable finding-anonymous"' in page
    line = HOSTILE.split("\n").index('    allow "open" when path prefix "/open/"') + 1
    assert f'<li id="rule-0-1" class="rule searchable effect-allow" data-file="{tmp_path}/policies/main.policy" ' \
           f'data-line="{line}"' in page and f"main.policy:{line}</span>" in page
    # Self-contained: nothing the browser would fetch (example requests may show URLs as text).
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//|url\(\s*["']?(https?:)?//|@import""", page)


def test_diff_shows_what_changed(tmp_path):
    old = write(tmp_path / "old", API)
    result, output = _report(tmp_path, API.replace('path == "/deploy"', 'path prefix "/deploy"'), "--diff", str(old))
    assert result.exit_code == 0, result.output
    page = output.read_text()
    assert 'class="verdict verdict-broader"' in page and "Rules edited: <code>deploy</code>" in page
    assert "newly allowed" in page and 'class="badge change-edited"' in page


def test_diff_against_a_git_revision(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    commit(repo, API, "old")
    write(repo / "policies", API.replace('path == "/deploy"', 'path prefix "/deploy"'))
    monkeypatch.chdir(repo)
    output = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", "policies", "-o", str(output), "--diff-revision", "HEAD",
                                       "--no-findings"])
    assert result.exit_code == 0, result.output
    page = output.read_text()
    assert "compared with <code>HEAD:policies</code>" in page and 'class="verdict verdict-broader"' in page
    result = CliRunner().invoke(main, ["report", "policies", "-o", str(output), "--diff-revision", "no-such-rev"])
    assert result.exit_code == 2 and "no-such-rev" in result.output


def test_errors_write_nothing(tmp_path):
    result, output = _report(tmp_path, API.replace("and issuer ci and", "and issuer cj and"))
    assert result.exit_code == 1 and "error[check/unknown-issuer]" in result.output
    assert not output.exists()


def test_no_findings(tmp_path):
    result, output = _report(tmp_path, API, "--no-findings")
    assert result.exit_code == 0, result.output
    assert "Not computed (<code>--no-findings</code>)" in output.read_text()


def test_usage_beside_each_matrix(tmp_path):
    """`--usage LOG`: beside each service's matrix, its rules the log shows deciding nothing, with
    links to them, and the callers' unused access; the catalog's unused owners below."""
    example = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
    log = Path(__file__).parents[1] / "docs" / "access.log"
    output = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", str(example), "-o", str(output), "--no-findings", "--usage", str(log)])
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", output.read_text()))
    assert "Allow rules that allowed nothing (candidates to remove): owner, reports, sre-read." in text
    assert "user:default/alice holds, never used: team-read" in text
    assert "Catalog owners that allowed nothing: owners(component:ledger) = user:default/carol (ledger/owner)." in text
    result = CliRunner().invoke(main, ["report", str(example), "-o", str(output), "--no-findings", "--usage", str(log),
                                       "--since", "2999-01-01"])
    assert result.exit_code == 0, result.output
    assert "Use in the access logs (0 requests)" in output.read_text()  # nothing in the window: all unused
