"""A policy reads files only under its roots: the folders given as inputs (a file's own folder)
and those allowed with `--allow-path`. An import, `jwks file`, `ca file`, `cert file`, `key file`
or `catalog` naming anything else, by an absolute path, `..` or a symlink, is refused with
`load/outside-root` at its string and never opened, so a policy under review cannot make CI read
its secrets and echo them. A file that is not policy text shows at most a short excerpt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.cli import main
from policyc.diagnostics import FOREIGN_SNIPPET_WIDTH, render_text
from policyc.pipeline import load_and_check
from tests.analysis.policies import commit

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"
SECRET = "s3cr3t-d0-n0t-echo-7f1c"
CONDITION = "condition staff = authenticated\n"
SERVICE = 'service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1"\n    allow "r" when staff\n}\n'
OPEN_SERVICE = SERVICE.replace('allow "r" when staff', 'allow public "r" when path == "/"')


def policyc(*args, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """policyc in its own process: its /proc/self/environ holds `env`; a file it opened by mistake
    (a fifo nobody writes) would hang it, and the timeout would fail the test."""
    return subprocess.run([sys.executable, "-m", "policyc", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def codes(pipeline) -> list[str]:
    return [d.code for d in pipeline.diagnostics if d.is_error]


@pytest.fixture
def layout(tmp_path) -> Path:
    """tmp/policies (the root), tmp/outside (a valid policy, keys, certificates, a catalog and a
    secret), all well formed, so that only the root decides."""
    (tmp_path / "policies").mkdir()
    outside = tmp_path / "outside"
    (outside / "catalog").mkdir(parents=True)
    (outside / "common.policy").write_text(CONDITION)
    (outside / "catalog" / "org.yaml").write_text((EXAMPLE / "catalog" / "org.yaml").read_text())
    for name in ("backstage.jwks.json",):
        (outside / name).write_text((EXAMPLE / "keys" / name).read_text())
    for name in ("mesh-ca.pem", "proxy.pem", "proxy.key"):
        (outside / name).write_text((EXAMPLE / "certs" / name).read_text())
    (outside / "secret.env").write_text(f"FAKE_CI_VARIABLE_NAME_LONG_ENOUGH_TO_PAD={SECRET}\n")
    return tmp_path


def main_policy(layout: Path, text: str) -> Path:
    path = layout / "policies" / "main.policy"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- imports


def test_an_import_of_proc_self_environ_is_refused_and_nothing_is_echoed(tmp_path):
    path = tmp_path / "main.policy"
    path.write_text('import "/proc/self/environ"\n' + SERVICE)
    for output_format in ("text", "json", "github", "sarif"):
        result = policyc("check", path, "--format", output_format, env={"POLICYC_FAKE_SECRET": SECRET})
        assert result.returncode == 1, result.stderr
        assert "load/outside-root" in result.stdout + result.stderr
        assert SECRET not in result.stdout + result.stderr


def test_the_diagnostic_is_at_the_string_with_a_hint(layout):
    path = main_policy(layout, 'import "../outside/common.policy"\n' + SERVICE)
    result = run("check", path)
    assert result.exit_code == 1
    assert f"{path}:1:8: error[load/outside-root]: `{layout}/outside/common.policy` is outside" in result.stderr
    assert '1 | import "../outside/common.policy"\n  |        ^^^^^^^^^^^^^^^^^^^^^^^^^^' in result.stderr
    assert "hint: a policy reads files only under the folders given as inputs; `--allow-path DIR`" in result.stderr


@pytest.mark.parametrize("written", ["../outside/common.policy", "sub/../../outside/common.policy",
                                     "{layout}/outside/common.policy"])
def test_dot_dot_and_absolute_paths_out_of_the_root_are_refused(layout, written):
    path = main_policy(layout, f'import "{written.format(layout=layout)}"\n' + SERVICE)
    (layout / "policies" / "sub").mkdir()
    assert codes(load_and_check([str(path)])) == ["load/outside-root"]
    assert run("check", path, "--allow-path", layout / "outside").exit_code == 0


def test_dot_dot_that_stays_inside_is_admitted(layout):
    (layout / "policies" / "sub").mkdir()
    (layout / "policies" / "common.policy").write_text(CONDITION)
    path = main_policy(layout, 'import "sub/../common.policy"\n' + SERVICE)
    assert load_and_check([str(path)]).ok


def test_a_symlink_out_of_the_root_is_refused(layout):
    policies = layout / "policies"
    (policies / "linked.policy").symlink_to(layout / "outside" / "common.policy")
    (policies / "shared").symlink_to(layout / "outside", target_is_directory=True)
    for written in ("linked.policy", "shared/common.policy"):
        path = main_policy(layout, f'import "{written}"\n' + SERVICE)
        pipeline = load_and_check([str(path)])
        [refusal] = pipeline.diagnostics
        assert refusal.code == "load/outside-root" and f"(really `{layout}/outside/common.policy`)" in refusal.message
    assert load_and_check([str(path)], allowed_roots=[str(layout / "outside")]).ok


def test_a_symlinked_policy_file_in_an_input_folder_is_refused(layout):
    """A change under review adds `policies/env.policy` → /proc/self/environ: the folder's own
    files are confined too, not only what they import."""
    (layout / "policies" / "env.policy").symlink_to("/proc/self/environ")
    result = policyc("check", layout / "policies", env={"POLICYC_FAKE_SECRET": SECRET})
    assert result.returncode == 1 and "load/outside-root" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_fifo_outside_the_root_is_never_opened(layout):
    """Opening a fifo that nobody writes blocks: the command ends only because nothing opens it."""
    os.mkfifo(layout / "outside" / "pipe.json")
    for text in ('import "../outside/pipe.json"\n',
                 'issuer i {\n    url "https://i.test"\n    jwks file "../outside/pipe.json"\n}\n',
                 'tls { cert file "../outside/pipe.json" key file "../outside/pipe.json" }\n'):
        result = policyc("check", main_policy(layout, text + SERVICE))
        assert result.returncode == 1 and "load/outside-root" in result.stderr, result.stderr


def test_a_root_that_a_symlink_leads_out_of_the_current_folder_is_no_root(layout, monkeypatch):
    """`policies/` turned into a link to `/` by a change must not make everything readable."""
    checkout = layout / "checkout"
    checkout.mkdir()
    (checkout / "policies").symlink_to(layout / "outside", target_is_directory=True)
    monkeypatch.chdir(checkout)
    pipeline = load_and_check(["policies"])
    assert codes(pipeline) == ["load/outside-root"]
    # Named by a path outside the current folder, a symlinked folder is a root as it resolves.
    (layout / "elsewhere").symlink_to(layout / "outside", target_is_directory=True)
    assert not codes(load_and_check([str(layout / "elsewhere")]))


# ---------------------------------------------------------------- files that are not policy text


def test_allowed_but_not_policy_text_shows_only_a_short_excerpt(layout):
    path = main_policy(layout, 'import "../outside/secret.env"\n' + SERVICE)
    result = run("check", path, "--allow-path", layout / "outside")
    assert result.exit_code == 1
    assert "secret.env:1:1: error[parse/unexpected-token]: unexpected text\n" in result.stderr
    [excerpt] = [line for line in result.stderr.splitlines() if line.startswith("1 | FAKE")]
    assert len(excerpt.removeprefix("1 | ")) == FOREIGN_SNIPPET_WIDTH + len("…") and excerpt.endswith("…")
    assert SECRET not in result.stdout + result.stderr
    for output_format in ("json", "github", "sarif"):
        result = run("check", path, "--allow-path", layout / "outside", "--format", output_format)
        assert "FAKE_CI" not in result.stdout + result.stderr and SECRET not in result.stdout + result.stderr


def test_a_policy_named_symlink_to_another_kind_of_file_is_not_policy_text(layout):
    (layout / "policies" / "settings.policy").symlink_to(layout / "policies" / "settings.env")
    (layout / "policies" / "settings.env").write_text(f"{'x' * 60}{SECRET}\n")
    pipeline = load_and_check([str(main_policy(layout, 'import "settings.policy"\n'))])
    [error] = pipeline.diagnostics
    text = render_text(error, pipeline.sources)
    assert error.message == "unexpected text" and SECRET not in text and "x" * 41 not in text


def test_a_policy_file_still_quotes_the_unexpected_token(layout):
    long_line = 'allow "' + "r" * 100 + '" when nonsense nonsense\n'
    path = main_policy(layout, 'service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1"\n    ' + long_line + "}\n")
    [error] = load_and_check([str(path)]).diagnostics
    assert error.message == "unexpected `nonsense`"


# ---------------------------------------------------------------- keys, certificates and catalogs


FILES = {
    "jwks file": 'issuer i {{\n    url "https://i.test"\n    jwks file "{d}/backstage.jwks.json"\n}}\n',
    "catalog": 'catalog "{d}/catalog"\n',
    "ca file, cert file, key file": 'tls {{ cert file "{d}/proxy.pem" key file "{d}/proxy.key" }}\n'
                                    'trust mesh {{ ca file "{d}/mesh-ca.pem" }}\n',
}


@pytest.mark.parametrize("kind", FILES)
def test_key_certificate_and_catalog_files_outside_the_root_are_refused(layout, kind):
    path = main_policy(layout, FILES[kind].format(d="../outside") + OPEN_SERVICE)
    refused = load_and_check([str(path)])
    assert set(codes(refused)) == {"load/outside-root"}
    assert all(d.span.path == str(path) for d in refused.diagnostics)
    assert load_and_check([str(path)], allowed_roots=[str(layout / "outside")]).ok
    assert run("check", path, "--allow-path", layout / "outside").exit_code == 0


@pytest.mark.parametrize("kind", FILES)
def test_symlinks_to_key_certificate_and_catalog_files_are_refused(layout, kind):
    (layout / "policies" / "linked").symlink_to(layout / "outside", target_is_directory=True)
    path = main_policy(layout, FILES[kind].format(d="linked") + OPEN_SERVICE)
    assert set(codes(load_and_check([str(path)]))) == {"load/outside-root"}


# ---------------------------------------------------------------- commands


def test_every_command_that_loads_policies_takes_allow_path(layout, tmp_path):
    path = main_policy(layout, 'import "../outside/common.policy"\n' + SERVICE)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"method": "GET", "path": "/", "host": "s.test"}))
    (layout / "policies" / "s.cases.yaml").write_text(
        "cases:\n  - request: {path: /, host: s.test}\n    expect: {status: 403}\n")
    commands = {
        "check": ["check", path], "eval": ["eval", path, "--request", request],
        "test": ["test", layout / "policies"], "compile": ["compile", path, "-o", tmp_path / "out"],
        "analyze": ["analyze", path], "who-can": ["who-can", "GET", "/", path, "--service", "s"],
        "report": ["report", path, "-o", tmp_path / "report.html", "--no-findings"],
        "diff": ["diff", path, path], "deploy": ["deploy", path, "--to", tmp_path / "deployed"],
    }
    for name, args in commands.items():
        refused = run(*args)
        assert refused.exit_code == 1 and "load/outside-root" in refused.stderr, name
        admitted = run(*args, "--allow-path", layout / "outside")
        assert admitted.exit_code == 0, (name, admitted.output)


def test_fmt_reads_only_the_files_it_rewrites(layout):
    (layout / "policies" / "env.policy").symlink_to("/proc/self/environ")
    path = main_policy(layout, 'import   "../outside/secret.env"\n')
    result = policyc("fmt", layout / "policies", env={"POLICYC_FAKE_SECRET": SECRET})
    assert result.returncode == 1 and "load/outside-root" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert path.read_text() == 'import "../outside/secret.env"\n', "the file in the root is formatted"


def test_the_example_reads_only_inside_itself(tmp_path, monkeypatch):
    """Its keys, certificates and catalog are under its folder: it compiles, with no flag, to
    exactly what is committed, from anywhere."""
    monkeypatch.chdir(EXAMPLE)
    result = run("compile", ".", "-o", "compiled", "--check")
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- git revisions


def test_diff_of_revisions_reads_each_revision_only(tmp_path, monkeypatch):
    """The allowed folders are taken at each revision, like the paths: the diff sees the change
    made in `shared/` between them, never the working tree's copy."""
    repo = tmp_path / "repo"
    policy = 'import "../shared/common.policy"\n' + SERVICE
    (repo / "shared").mkdir(parents=True)
    (repo / "shared" / "common.policy").write_text('condition staff = method == GET and path == "/a"\n')
    commit(repo, policy, "old")
    (repo / "shared" / "common.policy").write_text("condition staff = method == GET\n")
    commit(repo, policy, "new")
    (repo / "shared" / "common.policy").write_text("condition staff = method == DELETE\n")  # not committed
    monkeypatch.chdir(repo)
    refused = run("diff", "HEAD~1", "HEAD", "--", "policies")
    assert refused.exit_code == 1 and "load/outside-root" in refused.stderr
    result = run("diff", "HEAD~1", "HEAD", "--allow-path", "shared", "--fail-on", "broader", "--", "policies")
    assert result.exit_code == 1 and "s (s.test): broader" in result.stdout, result.output


def test_diff_of_revisions_confines_to_the_materialized_tree(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (tmp_path / "common.policy").write_text(CONDITION)
    escape = "../" * 12 + str(tmp_path).lstrip("/") + "/common.policy"
    commit(repo, f'import "{escape}"\n' + SERVICE, "old")
    commit(repo, f'import "{escape}"\n' + SERVICE + "\n", "new")
    monkeypatch.chdir(repo)
    result = run("diff", "HEAD~1", "HEAD", "--", "policies")
    assert result.exit_code == 1 and "load/outside-root" in result.stderr
