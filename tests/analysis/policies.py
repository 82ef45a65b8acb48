"""Small policy sets for the analysis tests, written to a folder and checked."""

import subprocess
from pathlib import Path

from click.testing import CliRunner

from policyc.checked import Checked
from policyc.cli import main
from policyc.credentials import certs as devcerts
from policyc.pipeline import load_and_check

ISSUERS = """
issuer idp {
    url "https://idp.example.com"
    jwks "https://idp.example.com/jwks.json"
    audience "api"
}
issuer ci {
    url "https://ci.example.com"
    jwks "https://ci.example.com/jwks.json"
}
"""

API = ISSUERS + """
service api {
    hosts ["api.internal"]
    upstream "127.0.0.1:8080"
    deny "no-admin" when path prefix "/admin"
    allow public "health" when path == "/healthz"
    allow "read" when method in [GET, HEAD] and path glob "/api/v1/**" and issuer idp
    allow "deploy" when method == POST and path == "/deploy" and issuer ci and token.roles contains "deployer"
}
"""


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.policy").write_text(text, encoding="utf-8")
    return folder


def commit(repo: Path, text: str, message: str) -> None:
    """`text` as the policies of git repository `repo` (made on first use), committed."""
    write(repo / "policies", text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    if not (repo / ".git").exists():
        subprocess.run([*git, "init", "-q"], cwd=repo, check=True, capture_output=True)
    for args in (["add", "."], ["commit", "-qm", message]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)


def checked(folder: Path, text: str) -> Checked:
    pipeline = load_and_check([str(write(folder, text))])
    assert pipeline.ok, pipeline.diagnostics
    return pipeline.checked


def peer_policy(folder: Path, rules: str, ca: devcerts.Issued) -> Checked:
    """A service behind a TLS listener that trusts `ca`, with `rules`."""
    folder.mkdir(parents=True, exist_ok=True)
    server = devcerts.issue(ca, "api.internal", dns=["api.internal"], server=True)
    for name, text in (("ca.pem", ca.cert_pem), ("server.pem", server.cert_pem), ("server.key", server.key_pem)):
        (folder / name).write_text(text)
    return checked(folder, f"""tls {{
    cert file "server.pem"
    key file "server.key"
}}
trust mesh {{
    ca file "ca.pem"
}}
service api {{
    hosts ["api.internal"]
    upstream "127.0.0.1:8080"
{rules}
}}
""")


def run_cli(*args, expect: int):
    """`policyc ARGS…`, which must exit with `expect`."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.stderr, result.exception)
    return result
