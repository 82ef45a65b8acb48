"""Starting points, as sets of new files: the policy repository of `policyc init` and the
development certificates of `policyc dev-certs`.

Every function returns relative path → text; `output.create_files` writes them, never replacing a file.
The repository is laid out as the shipped GitHub workflow (`docs/ci/github-workflow.yml`) expects
by default, and that workflow is copied into it as is: one copy of the CI steps, not two.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..backends import compile_outputs
from ..backends.envoy import Options
from ..credentials import certs as devcerts
from ..diagnostics import render_text
from ..pipeline import load_and_check
from ..resources import resource_dir
from .idp import DEFAULT_PORT

CA_FILES = ("ca.pem", "ca.key")
# A file name, and the certificate's common name, which X.509 limits to 64 characters.
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class Client:
    """A client certificate to issue: its file name (without `.pem`/`.key`) and its SANs."""

    name: str
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


def spiffe_client(value: str) -> Client:
    """`[NAME=]SPIFFE_ID` → a client with that URI SAN, named after the ID's last path segment by default."""
    name, _, uri = value.rpartition("=")
    problem = devcerts.spiffe_id_problem(uri)
    if problem:
        raise ValueError(problem)
    return Client(_file_name(name or uri.rsplit("/", 1)[1]), uris=(uri,))


def dns_client(value: str) -> Client:
    """`[NAME=]DNS_NAME` → a client with that DNS SAN, named after it by default."""
    name, _, dns = value.rpartition("=")
    problem = devcerts.dns_name_problem(dns)
    if problem:
        raise ValueError(problem)
    return Client(_file_name(name or dns.replace("*", "wildcard")), dns=(dns,))


def _file_name(name: str) -> str:
    if not _FILE_NAME.match(name):
        raise ValueError(f"{name!r} cannot name a certificate: at most 64 letters, digits, '.', '-' and '_', "
                         "not starting with '.'")
    return name


def certificate_files(ca: devcerts.Issued | None, server_dns: tuple[str, ...], clients: list[Client],
                      days: int) -> dict[str, str]:
    """The PEM files of a CA (a new one unless `ca` is given), a listener certificate for
    `server_dns` (none when empty) and `clients`, each leaf valid for `days` from a day ago."""
    problem = next(filter(None, map(devcerts.dns_name_problem, server_dns)), None)
    if problem:
        raise ValueError(problem)
    names = ["ca"] + (["server"] if server_dns else []) + [client.name for client in clients]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"two certificates would be written as {', '.join(twice)}.pem: name them with NAME=")
    files = {}
    if ca is None:
        ca = devcerts.make_ca("policyc dev CA")
        files.update(zip(CA_FILES, (ca.cert_pem, ca.key_pem), strict=True))
    leaves = [("server", devcerts.issue(ca, "policyc dev listener", dns=server_dns, server=True, valid_days=days))
              ] if server_dns else []
    leaves += [(client.name, devcerts.issue(ca, client.name, uris=client.uris, dns=client.dns,
                                            organization="policyc dev", valid_days=days)) for client in clients]
    for name, issued in leaves:
        files[f"{name}.pem"], files[f"{name}.key"] = issued.cert_pem, issued.key_pem
    return files


WORKFLOW_PATH = ".github/workflows/policies.yml"

_COMMON = f"""\
# Who the callers are. `dev` is the development identity provider: `policyc dev-idp` serves its
# keys on 127.0.0.1:{DEFAULT_PORT}, and `policyc token mint` signs its tokens. Before production,
# replace it with your identity provider: its https `url` and `jwks`.
issuer dev {{
    url "http://127.0.0.1:{DEFAULT_PORT}"
    jwks "http://127.0.0.1:{DEFAULT_PORT}/.well-known/jwks.json"
    audience "hello"
}}
"""

_SERVICE = """\
# A service: the hosts it answers, where allowed requests go, and who may send what.
import "common.policy"

service hello {
    hosts ["hello.internal"]
    upstream "127.0.0.1:8080"

    deny "no-admin" when path prefix "/admin/"
    allow public "health" when path == "/healthz"
    allow "read" when issuer dev and method in [GET, HEAD]
    allow "write" when issuer dev and token.sub == "user:default/alice" and method == POST
        and path glob "/api/**"
}
"""

_CASES = """\
# Policy unit tests: `policyc test policies --coverage`. Tokens are minted for the issuer named;
# its keys are made up here, since `dev` publishes them from a URL.
cases:
  - name: anyone checks health
    request: {method: GET, path: /healthz, host: hello.internal}
    expect: {status: 200, rule: health}
  - name: a caller with a token reads
    request:
      method: GET
      path: /api/greetings
      host: hello.internal
      token: {issuer: dev, claims: {sub: user:default/bob}}
    expect: {status: 200, rule: read}
  - name: a caller without a token does not
    request: {method: GET, path: /api/greetings, host: hello.internal}
    expect: {status: 403, reason: default-deny}
  - name: alice writes
    request:
      method: POST
      path: /api/greetings
      host: hello.internal
      token: {issuer: dev, claims: {sub: user:default/alice}}
    expect: {status: 200, rule: write}
  - name: bob does not
    request:
      method: POST
      path: /api/greetings
      host: hello.internal
      token: {issuer: dev, claims: {sub: user:default/bob}}
    expect: {status: 403, reason: default-deny}
  - name: no one reaches /admin/, alice included
    request:
      method: GET
      path: /admin/users
      host: hello.internal
      token: {issuer: dev, claims: {sub: user:default/alice}}
    expect: {status: 403, rule: no-admin}
  - name: an expired token is refused
    request:
      method: GET
      path: /api/greetings
      host: hello.internal
      token: {issuer: dev, claims: {sub: user:default/bob}, expires_in: -600}
    expect: {status: 401, reason: unauthenticated}
"""


class ScaffoldError(Exception):
    """The starting policies do not check or compile: a bug in policyc, since their text is fixed
    (reported as an internal error)."""


def workflow_text() -> str:
    return (resource_dir("docs") / "ci" / "github-workflow.yml").read_text(encoding="utf-8")


def project_layout() -> tuple[str, str]:
    """The folders of the policies and of the compiled configuration, as the workflow names them."""
    env = yaml.safe_load(workflow_text())["env"]
    return env["POLICIES"], env["COMPILED"]


def project_files(root: Path) -> dict[str, str]:
    """A policy repository under `root`: an issuer, a service, its passing cases, the Envoy
    configuration they compile to, and the GitHub workflow that checks all of it."""
    policies, compiled = project_layout()
    sources = {f"{policies}/common.policy": _COMMON, f"{policies}/hello.policy": _SERVICE}
    files = {**sources, f"{policies}/hello.cases.yaml": _CASES, WORKFLOW_PATH: workflow_text()}
    # Checked and compiled from memory, before anything is written.
    overlay = {os.path.realpath(root / relative): text for relative, text in sources.items()}
    pipeline = load_and_check([str(root / relative) for relative in sources], overlay)
    if not pipeline.ok:
        raise ScaffoldError(_summary(pipeline.diagnostics, pipeline.sources))
    output = compile_outputs(pipeline.checked, "auto", Options())
    if output.diagnostics:
        raise ScaffoldError(_summary(output.diagnostics, pipeline.sources))
    return {**files, **{f"{compiled}/{relative}": text for relative, text in output.files.items()}}


def _summary(diagnostics, sources) -> str:
    """The diagnostics' first lines, on one line: an internal error is reported in one."""
    return "the starting policies do not compile: " + "; ".join(
        render_text(d, sources).splitlines()[0] for d in diagnostics)
