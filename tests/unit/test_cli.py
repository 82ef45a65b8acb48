"""The command line: exit codes, where output goes, and each command on the example."""

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from policyc.cli import main
from tests import CASE_KEYS

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
FIVE_MISTAKES = Path(__file__).parent.parent / "golden" / "diagnostics" / "five_mistakes" / "main.policy"


def run(*args, expect: int, stdin: bytes | None = None):
    result = CliRunner().invoke(main, [str(a) for a in args], input=stdin)
    assert result.exit_code == expect, (result.output, result.stderr, result.exception)
    return result


def test_check_clean_example():
    result = run("check", EXAMPLE, expect=0)
    assert result.stdout == ""
    assert "0 errors, 0 warnings" in result.stderr


def test_check_reports_every_error_on_stderr_only():
    result = run("check", FIVE_MISTAKES, expect=1)
    assert result.stdout == ""
    assert result.stderr.count(": error[") == 5
    assert "5 errors, 1 warning" in result.stderr


def test_check_json():
    result = run("check", "--format", "json", FIVE_MISTAKES, expect=1)
    diagnostics = json.loads(result.stdout)
    assert [d["code"] for d in diagnostics if d["severity"] == "error"] == [
        "check/bad-method", "check/unknown-issuer", "check/bad-glob", "check/bad-cidr", "check/unknown-condition"]
    assert diagnostics[0]["line"] == 12 and diagnostics[0]["column"] == 39


def test_usage_errors_exit_2(tmp_path):
    run("check", tmp_path, expect=2)  # a folder with no policies
    run("eval", EXAMPLE, expect=2)  # --request missing
    run("frobnicate", expect=2)


def test_eval_prints_the_decision(tmp_path):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"method": "GET", "path": "/healthz", "host": "payments.internal"}))
    result = run("eval", EXAMPLE, "--request", request, "--json", expect=0)
    assert json.loads(result.stdout) == {"status": 200, "rule": "health", "reason": "allow", "service": "payments"}
    text = run("eval", EXAMPLE, "--request", request, expect=0).stdout
    assert text.startswith("200 allow by rule 'health' in service 'payments'")


def test_eval_with_hostile_path(tmp_path):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"method": "GET", "path": "/debug%2Fx", "host": "payments.internal"}))
    result = run("eval", EXAMPLE, "--request", request, "--json", expect=0)
    assert json.loads(result.stdout)["status"] == 400


def test_eval_of_a_grpc_call_gives_its_grpc_status(tmp_path):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"method": "POST", "path": "/shop.v1.Orders/Get", "host": "shop.test",
                                   "headers": {"content-type": "application/grpc"}}))
    grpc = Path(__file__).parents[1] / "cases" / "grpc"
    result = run("eval", grpc, "--request", request, "--json", "--allow-path", CASE_KEYS, expect=0)
    assert json.loads(result.stdout) == {"status": 403, "reason": "default-deny", "rule": None, "service": "shop",
                                         "grpc_status": 7}
    decided = run("eval", grpc, "--request", request, "--allow-path", CASE_KEYS, expect=0)
    assert "a gRPC call: HTTP 200 with grpc-status 7" in decided.stdout


def test_eval_bad_request_file_is_a_usage_error(tmp_path):
    request = tmp_path / "request.json"
    request.write_text('{"method": 1}')
    assert "request method must be a string" in run("eval", EXAMPLE, "--request", request, expect=2).stderr


def test_test_command_summary():
    result = run("test", EXAMPLE, expect=0)
    assert result.stdout.strip().splitlines()[-1].endswith(" passed, 0 failed")


def test_test_command_reports_a_failing_case(tmp_path):
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE, folder)
    cases = folder / "example.cases.yaml"
    cases.write_text(cases.read_text().replace("expect: {status: 200, rule: health}", "expect: {status: 403}", 1))
    result = run("test", folder, expect=1)
    assert "FAIL" in result.stdout and "status: expected 403, got 200" in result.stdout
    assert result.stdout.strip().endswith(" passed, 1 failed")


def test_test_command_refuses_a_case_file_nested_too_deeply(tmp_path):
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE, folder)
    (folder / "deep.cases.yaml").write_text("cases: " + "[" * 5000 + "]" * 5000 + "\n")
    result = run("test", folder, expect=1)
    assert "deep.cases.yaml: nested too deeply to read" in result.stderr


def test_fmt_check_and_rewrite(tmp_path):
    policy = tmp_path / "p.policy"
    policy.write_text('condition   c=method==GET   # keep me\n')
    run("fmt", "--check", policy, expect=1)
    assert policy.read_text() == 'condition   c=method==GET   # keep me\n'
    run("fmt", policy, expect=0)
    assert policy.read_text() == "condition c = method == GET  # keep me\n"
    run("fmt", "--check", policy, expect=0)


def test_fmt_refuses_files_with_syntax_errors(tmp_path):
    policy = tmp_path / "p.policy"
    policy.write_text("condition c = \n")
    result = run("fmt", policy, expect=1)
    assert "error[parse/unexpected-end]" in result.stderr
    assert policy.read_text() == "condition c = \n"


UNFORMATTED = 'condition   c=method==GET   # keep me\nservice s {\n  hosts "a"\n    upstream "127.0.0.1:1"}'


def test_fmt_diff_prints_what_would_change_and_writes_nothing(tmp_path):
    policy = tmp_path / "p.policy"
    policy.write_text(UNFORMATTED)
    result = run("fmt", "--diff", policy, expect=1)
    assert result.stdout == (
        f"--- {policy}\n+++ {policy}\n@@ -1,4 +1,6 @@\n"
        "-condition   c=method==GET   # keep me\n+condition c = method == GET  # keep me\n+\n service s {\n"
        '-  hosts "a"\n-    upstream "127.0.0.1:1"}\n\\ No newline at end of file\n'
        '+    hosts "a"\n+    upstream "127.0.0.1:1"\n+}\n')
    assert result.stderr == f"would reformat {policy}\n"
    assert policy.read_text() == UNFORMATTED
    run("fmt", policy, expect=0)
    assert run("fmt", "--diff", policy, expect=0).stdout == ""


def test_fmt_diff_holds_both_sides_line_for_line(tmp_path):
    # Lines end at "\n" only: a form feed or a carriage return is part of its line, not a break.
    policy = tmp_path / "p.policy"
    policy.write_bytes(b"condition c = authenticated\n\x0ccondition   d = not c\r\n")
    before = policy.read_bytes().decode()
    body = run("fmt", "--diff", policy, expect=1).stdout_bytes.decode().split("\n")[3:-1]
    run("fmt", policy, expect=0)
    assert "".join(line[1:] + "\n" for line in body if line[0] in " -") == before
    assert "".join(line[1:] + "\n" for line in body if line[0] in " +") == policy.read_bytes().decode()


def test_fmt_stdin_writes_the_formatted_policy_to_stdout():
    result = run("fmt", "-", stdin=UNFORMATTED.encode(), expect=0)
    assert result.stdout == 'condition c = method == GET  # keep me\n\nservice s {\n    hosts "a"\n' \
                            '    upstream "127.0.0.1:1"\n}\n'
    assert result.stderr == ""
    assert run("fmt", "-", stdin=result.stdout_bytes, expect=0).stdout == result.stdout


def test_fmt_stdin_with_check_or_diff_writes_no_policy():
    assert run("fmt", "--check", "-", stdin=UNFORMATTED.encode(), expect=1).stdout == ""
    result = run("fmt", "--diff", "-", stdin=b"condition c=authenticated\n", expect=1)
    assert result.stdout.startswith("--- <stdin>\n+++ <stdin>\n@@ -1 +1 @@\n-condition c=authenticated\n")
    assert result.stderr == "would reformat <stdin>\n"


def test_fmt_stdin_diagnostics_name_stdin():
    result = run("fmt", "-", stdin=b'service s {\n    allow "x" when path ==\n    allow "y" when header == "z"\n}\n',
                 expect=1)
    assert result.stdout == ""
    assert "<stdin>:3:5: error[parse/unexpected-token]" in result.stderr
    assert "<stdin>:3:27: error[parse/unexpected-token]" in result.stderr
    assert '3 |     allow "y" when header == "z"\n  |     ^^^^^' in result.stderr
    assert "<stdin>:1:1: error[load/not-utf8]" in run("fmt", "-", stdin=b"\xff", expect=1).stderr


def test_fmt_stdin_is_the_only_path(tmp_path):
    policy = tmp_path / "p.policy"
    policy.write_text("condition c = authenticated\n")
    assert "cannot be given with other paths" in run("fmt", "-", policy, expect=2).stderr


def test_check_reports_each_syntax_error_and_compile_writes_nothing(tmp_path):
    policy = tmp_path / "p.policy"
    policy.write_text('service s {\n    allow "x" when path ==\n    deny "y" if authenticated\n}\n'
                      'service t {\n    hosts "t" "u"\n}\n')
    result = run("check", policy, expect=1)
    assert result.stderr.count(": error[parse/unexpected-token]") == 3
    assert "3 errors, 0 warnings" in result.stderr
    run("compile", policy, "-o", tmp_path / "out", expect=1)
    assert not (tmp_path / "out").exists()


def test_half_a_surrogate_pair_is_a_located_error_for_every_command(tmp_path):
    # Regression: `check` passed it, and `compile`/`verify` failed with an internal UnicodeEncodeError.
    policy = tmp_path / "p.policy"
    policy.write_text('service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1"\n'
                      '    deny "d" when header "x-name" suffix "\\ud800"\n}\n')
    for command in (["check"], ["compile", "-o", tmp_path / "out"], ["verify"]):
        result = run(*command, policy, expect=1)
        assert f"{policy}:4:43: error[parse/lone-surrogate]" in result.stderr
    assert not (tmp_path / "out").exists()


def _modes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()}


def test_files_holding_the_private_key_are_written_for_their_owner_alone(tmp_path):
    run("compile", EXAMPLE, "-o", tmp_path / "out", expect=0)
    run("deploy", EXAMPLE, "--to", tmp_path / "live", expect=0)
    for folder in ("out", "live"):
        modes = _modes(tmp_path / folder)
        keyed = {name for name in modes if "PRIVATE KEY-----" in (tmp_path / folder / name).read_text()}
        assert keyed == {"out": {"envoy.yaml"}, "live": {"lds.yaml"}}[folder], folder
        assert {name: modes[name] for name in keyed} == dict.fromkeys(keyed, 0o600), folder
        assert set(modes.values()) - {0o600} == {0o644}, folder
