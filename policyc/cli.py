"""Command line: `policyc check | fmt | eval | test | compile | verify | explain | lsp | diff | analyze |
who-can | report` and the operations commands.

Artifacts go to stdout, diagnostics to stderr. Exit codes: 0 ok, 1 policy errors or failed
cases, 2 usage errors, 3 an internal error (a bug in policyc, reported in one line, not a traceback).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from difflib import get_close_matches
from functools import partial
from importlib.metadata import version
from pathlib import Path

import click
import yaml

from . import audit
from .backends import TARGETS, compile_dynamic, compile_outputs
from .backends.envoy import Options
from .backends.rbac import expressible
from .casefile import CaseFileError, load_case_file, protocols, run_cases
from .check import upstream_problem
from .deploy import Deployment, configmap, deploy, watch
from .devidp import DevIdp, default_keys_path, mint_token
from .diagnostics import CODES, render_github, render_json, render_sarif, render_text, summary_line
from .explain import explanation, explanations
from .interpret import RawRequest, evaluate
from .interpret.request import H2, H2C, HTTP1, PROTOCOLS
from .junit import junit_xml
from .loader import expand_inputs, load
from .output import stale_files, write_tree
from .pipeline import Pipeline, load_and_check
from .syntax import parse
from .syntax.printer import format_file

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def _report(pipeline: Pipeline, output_format: str = "text") -> None:
    """Diagnostics to stderr as text; to stdout as JSON, GitHub workflow commands or SARIF."""
    if output_format == "json":
        click.echo(render_json(pipeline.diagnostics))
        return
    if output_format == "github":
        if pipeline.diagnostics:
            click.echo(render_github(pipeline.diagnostics))
        return
    if output_format == "sarif":
        click.echo(render_sarif(pipeline.diagnostics, version("policyc"), explanations()))
        return
    for diagnostic in pipeline.diagnostics:
        click.echo(render_text(diagnostic, pipeline.sources) + "\n", err=True)


def _checked_or_exit(paths, label: str | None = None) -> Pipeline:
    """The checked policies, or their diagnostics and exit 1; `label` names which policies."""
    pipeline = load_and_check(list(paths))
    _report(pipeline)
    if not pipeline.ok:
        click.echo(f"policyc: {label + ': ' if label else ''}{summary_line(pipeline.diagnostics)}", err=True)
        sys.exit(EXIT_FAILED)
    return pipeline


def _policy_paths(paths) -> list[str]:
    """Inputs as policy paths: files as given, folders for their `.policy` files; none → usage error."""
    if not expand_inputs(list(paths)):
        raise click.UsageError("no .policy files among the given paths")
    return list(paths)


class _Commands(click.Group):
    """The last resort: an exception that no stage turned into a diagnostic is a bug in policyc.
    It is named in one line on stderr with exit code 3, never shown as a traceback (unless
    POLICYC_TRACEBACK is set, for debugging)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`policyc … | head`): no traceback, and not a success either,
            # since the command never finished (a `--fail-on` gate must not pass by it).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_FAILED)
        except Exception as error:
            if os.environ.get("POLICYC_TRACEBACK"):
                raise
            click.echo(f"policyc: internal error: {type(error).__name__}: {error}", err=True)
            click.echo("policyc: this is a bug in policyc; set POLICYC_TRACEBACK=1 to see where", err=True)
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="policyc")
def main() -> None:
    """Identity-aware access policies for services behind Envoy.

    Exit codes: 0 ok, 1 policy errors or failed cases, 2 usage errors, 3 internal errors.
    """


@main.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "output_format", type=click.Choice(["text", "json", "github", "sarif"]), default="text",
              help="text on stderr; or on stdout a JSON list, GitHub Actions annotations or a SARIF 2.1.0 log")
def check_command(paths, output_format):
    """Parse and check policies; print every diagnostic."""
    pipeline = load_and_check(_policy_paths(paths))
    _report(pipeline, output_format)
    if output_format in ("text", "github"):
        click.echo(f"policyc: {summary_line(pipeline.diagnostics)}", err=True)
    sys.exit(EXIT_OK if pipeline.ok else EXIT_FAILED)


@main.command("fmt")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--check", "check_only", is_flag=True, help="write nothing; exit 1 if a file would change")
def fmt_command(paths, check_only):
    """Rewrite policy files in the canonical layout (comments kept)."""
    changed, failed = [], False
    for path in expand_inputs(_policy_paths(paths)):
        loaded = load([path])
        source = loaded.sources.get(path)
        file, diagnostics = parse(source) if source else (None, loaded.diagnostics)
        if file is None or diagnostics:
            _report(Pipeline(None, loaded.sources, diagnostics or loaded.diagnostics))
            failed = True
            continue
        text = format_file(file, source)
        if text != source.text:
            changed.append(path)
            if not check_only:
                _write_atomically(path, text)
    for path in changed:
        click.echo(f"{'would reformat' if check_only else 'reformatted'} {path}", err=True)
    sys.exit(EXIT_FAILED if failed or (check_only and changed) else EXIT_OK)


def _write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.policyc-tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)


def _read_request(path: str) -> RawRequest:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) if path.endswith((".yaml", ".yml")) else json.load(f)
        return RawRequest.from_dict(data)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise click.UsageError(f"cannot read request {path}: {e}") from None


def _read_jwks(pairs) -> dict[str, dict]:
    keys = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep:
            raise click.UsageError(f"--jwks takes ISSUER=FILE, not {pair!r}")
        try:
            with open(path, encoding="utf-8") as f:
                keys[name] = json.load(f)
        except (OSError, ValueError) as e:
            raise click.UsageError(f"cannot read JWKS {path}: {e}") from None
    return keys


@main.command("eval")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--request", "request_path", required=True, type=click.Path(),
              help="the request as JSON (or YAML): method, path, host, headers, source")
@click.option("--json", "as_json", is_flag=True, help='print {"status", "rule", "reason", …}')
@click.option("--jwks", "jwks", multiple=True, metavar="ISSUER=FILE",
              help="keys an issuer with a remote `jwks` would publish")
@click.option("--now", type=float, default=None, help="the time, in seconds since the epoch")
def eval_command(paths, request_path, as_json, jwks, now):
    """Decide one request with the reference interpreter, and say why."""
    pipeline = _checked_or_exit(_policy_paths(paths))
    decision = evaluate(pipeline.checked, _read_request(request_path), now, keys=_read_jwks(jwks))
    if as_json:
        click.echo(json.dumps(decision.to_json(), sort_keys=True))
        return
    click.echo(f"{decision.status} {decision.reason}" + (f" by rule {decision.rule!r}" if decision.rule else "")
               + (f" in service {decision.service!r}" if decision.service else ""))
    if decision.dry_run:
        click.echo(f"dry-run: the policy would have answered {decision.enforced_status}")
    if decision.grpc_status is not None:
        click.echo(f"a gRPC call: HTTP 200 with grpc-status {decision.grpc_status}")
    if decision.detail:
        click.echo(decision.detail)
    if decision.caller:
        click.echo(f"caller: {decision.caller.get('sub')} (issuer {decision.caller.get('issuer')})")


def _case_paths(paths) -> tuple[list[str], list[str]]:
    policies, cases = [], []
    for path in paths:
        if os.path.isdir(path):
            policies.append(path)
            cases += sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files
                            if f.endswith((".cases.yaml", ".cases.yml")))
        elif path.endswith((".yaml", ".yml")):
            cases.append(path)
        else:
            policies.append(path)
    return policies, cases


@main.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--now", type=float, default=None, help="the time, in seconds since the epoch")
@click.option("-v", "--verbose", is_flag=True, help="print every case, not only failures")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False),
              help="also write the results as a JUnit XML report to this file")
def test_command(paths, now, verbose, junit_path):
    """Run policy unit tests: case files (*.cases.yaml) against the policies given with them."""
    policy_paths, case_paths = _case_paths(paths)
    if not case_paths:
        raise click.UsageError("no case files (*.cases.yaml) among the given paths")
    pipeline = _checked_or_exit(_policy_paths(policy_paths))
    passed = failed = 0
    suites = []
    for case_path in case_paths:
        try:
            results = run_cases(pipeline.checked, load_case_file(case_path), now)
        except CaseFileError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_FAILED)
        suites.append((case_path, results))
        for result in results:
            passed += result.passed
            failed += not result.passed
            if not result.passed or verbose:
                status = "PASS" if result.passed else "FAIL"
                click.echo(f"{status} {result.case.where} {result.case.name}")
                for failure in result.failures:
                    click.echo(f"     {failure}")
    if junit_path:
        _write_atomically(junit_path, junit_xml(suites))
    click.echo(f"{passed} passed, {failed} failed")
    sys.exit(EXIT_OK if failed == 0 else EXIT_FAILED)


def _envoy_options(command):
    """The emitted Envoy's target, addresses and access log: shared by compile, deploy and watch."""
    for option in reversed([
        click.option("--target", type=click.Choice(TARGETS), default="auto", show_default=True,
                     help="native RBAC, Lua, or RBAC wherever it can express a rule set and Lua for the rest"),
        click.option("--listen", default="127.0.0.1:10000", show_default=True, help="the listener's address"),
        click.option("--admin", default="127.0.0.1:9901", show_default=True, help="the admin interface's address"),
        click.option("--access-log", default="/dev/stdout", show_default=True,
                     help="where Envoy writes JSON access logs"),
        click.option("--jwks-refresh", type=click.IntRange(min=1), default=10, show_default=True, metavar="SECONDS",
                     help="how often Envoy fetches a remote JWKS again (a rotated key works from then on)"),
    ]):
        command = option(command)
    return command


def _options(listen: str, admin: str, access_log: str, jwks_refresh: int) -> Options:
    for name, address in (("--listen", listen), ("--admin", admin)):
        # Port 0 lets Envoy pick a free port; the admin interface's /listeners tells which.
        if upstream_problem(address.removesuffix(":0") + ":1" if address.endswith(":0") else address) is not None:
            raise click.BadParameter(f"{address!r} is not host:port", param_hint=name)
    return Options(listen, admin, access_log, jwks_refresh_seconds=jwks_refresh)


@main.command("compile")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "outdir", type=click.Path(file_okay=False),
              help="folder to write; replaced as a whole, and left untouched on any error")
@click.option("--format", "output_format", type=click.Choice(["files", "configmap"]), default="files",
              show_default=True, help="a folder of files, or a Kubernetes ConfigMap on stdout for hot reloads")
@click.option("--mount-path", default="/etc/policyc", show_default=True,
              help="with --format configmap: where the Envoy pod mounts the ConfigMap")
@click.option("--name", default="policyc", show_default=True, help="with --format configmap: the ConfigMap's name")
@click.option("--check", "check_only", is_flag=True,
              help="write nothing; exit 1 if the output folder differs from what would be written")
@_envoy_options
def compile_command(paths, outdir, output_format, mount_path, name, check_only, target, listen, admin, access_log,
                    jwks_refresh):
    """Compile policies to Envoy configuration: envoy.yaml and per-service filters, or
    a ConfigMap holding a bootstrap and the clusters, listener and routes it reloads."""
    if (outdir is None) == (output_format == "files"):
        raise click.UsageError("--output is needed with --format files, and only then")
    options = _options(listen, admin, access_log, jwks_refresh)
    pipeline = _checked_or_exit(_policy_paths(paths))
    if output_format == "configmap":
        compiled = compile_dynamic(pipeline.checked, target, options, mount_path)
    else:
        compiled = compile_outputs(pipeline.checked, target, options)
    if compiled.diagnostics:
        _report(Pipeline(None, pipeline.sources, compiled.diagnostics))
        click.echo(f"policyc: {summary_line(compiled.diagnostics)}; nothing written", err=True)
        sys.exit(EXIT_FAILED)
    for service, plan in sorted(compiled.plans.items()):
        click.echo(f"{service}: {plan}", err=True)
    if output_format == "configmap":
        click.echo(configmap(compiled, name), nl=False)
        return
    if check_only:
        _check_tree(outdir, compiled.files)
        return
    write_tree(outdir, compiled.files)
    click.echo(f"wrote {len(compiled.files)} files to {outdir}", err=True)


def _report_deployment(deployment: Deployment, folder: str) -> None:
    _report(Pipeline(None, deployment.pipeline.sources, deployment.diagnostics))
    if deployment.version is None:
        click.echo(f"policyc: {summary_line(deployment.diagnostics)}; nothing deployed", err=True)
        return
    click.echo(f"deployed {deployment.version} to {folder} ("
               + ", ".join(f"{name}: {plan}" for name, plan in sorted(deployment.plans.items())) + ")")


_TO_OPTION = click.option("--to", "folder", required=True, type=click.Path(file_okay=False),
                          help="the folder Envoy watches: run `envoy -c FOLDER/envoy.yaml`")


@main.command("deploy")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_TO_OPTION
@_envoy_options
def deploy_command(paths, folder, target, listen, admin, access_log, jwks_refresh):
    """Check and compile policies, then publish them by atomic renames into a watched folder:
    running Envoys switch to them without a restart. Prints the policy version."""
    options = _options(listen, admin, access_log, jwks_refresh)
    deployment = deploy(_policy_paths(paths), folder, target, options)
    _report_deployment(deployment, folder)
    sys.exit(EXIT_OK if deployment.version else EXIT_FAILED)


@main.command("watch")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_TO_OPTION
@_envoy_options
def watch_command(paths, folder, target, listen, admin, access_log, jwks_refresh):
    """Deploy, then deploy again on every save. A policy with errors is reported and not
    deployed; Envoy keeps the last good one. Stop with Ctrl-C."""
    options = _options(listen, admin, access_log, jwks_refresh)
    with contextlib.suppress(KeyboardInterrupt):
        watch(_policy_paths(paths), folder, partial(_report_deployment, folder=folder), target, options)


@main.command("audit")
@click.argument("logs", nargs=-1, required=True, type=click.File("r", encoding="utf-8"))
@click.option("--service", default=None, help="only this service's requests")
@click.option("--since", default=None, metavar="TIME",
              help="only requests from TIME on: ISO 8601 (UTC unless a zone is given) or a duration back, e.g. 2h")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
def audit_command(logs, service, since, output_format):
    """Who accessed what through which rule, what was denied, and what dry-run services would
    have denied, from Envoy's JSON access logs (`-` reads stdin)."""
    try:
        start = audit.parse_since(since) if since else None
    except ValueError:
        raise click.BadParameter(f"{since!r} is neither an ISO 8601 time nor a duration like 15m",
                                 param_hint="--since") from None
    events, skipped = audit.read_events((line for log in logs for line in log), service, start)
    render = audit.render_json if output_format == "json" else audit.render_table
    click.echo(render(events, skipped))


def _claims(pairs) -> dict:
    """k=v pairs; a value that is JSON (true, 42, ["a","b"]) is taken as such, anything else as a string."""
    claims = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"takes NAME=VALUE, not {pair!r}", param_hint="--claim")
        try:
            claims[name] = json.loads(value)
        except ValueError:
            claims[name] = value
    return claims


_KEYS_OPTION = click.option("--keys", "keys_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                            help="the development signing keys (created when missing) [default: "
                                 "$XDG_STATE_HOME/policyc/dev-idp.json]")


@main.group("token")
def token_group():
    """Development tokens, signed by the keys `policyc dev-idp` publishes."""


@token_group.command("mint")
@_KEYS_OPTION
@click.option("--issuer", default=None, help="the `iss` claim [default: the issuer of the last dev-idp started]")
@click.option("--sub", required=True, help="the `sub` claim, e.g. user:default/alice")
@click.option("--audience", "audiences", multiple=True, help="the `aud` claim (repeat for a list)")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE", help="any other claim (repeatable)")
@click.option("--expires-in", default=3600, show_default=True, help="seconds until `exp`")
def token_mint_command(keys_path, issuer, sub, audiences, claims, expires_in):
    """Print a signed JWT for local trials and tests."""
    try:
        token = mint_token(keys_path or default_keys_path(), sub, _claims(claims), issuer, audiences, expires_in)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(token)


@main.command("dev-idp")
@_KEYS_OPTION
@click.option("--port", default=8900, show_default=True, help="the port on 127.0.0.1 (0: any free port)")
@click.option("--rotate-every", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="sign with a new key this often, keeping the previous one published")
def dev_idp_command(keys_path, port, rotate_every):
    """Serve a development identity provider on 127.0.0.1: its OpenID discovery document and
    JWKS, for `remote_jwks` trials with tokens from `policyc token mint`. Stop with Ctrl-C."""
    with DevIdp(keys_path or default_keys_path(), port) as idp, contextlib.suppress(KeyboardInterrupt):
        click.echo(f"issuer {idp.issuer}\njwks   {idp.jwks_uri}\n\nissuer dev {{\n    url \"{idp.issuer}\"\n"
                   f"    jwks \"{idp.jwks_uri}\"\n}}", err=True)
        while True:
            time.sleep(rotate_every or 3600)
            if rotate_every:
                idp.rotate()
                click.echo("rotated the signing key", err=True)


def _check_tree(outdir: str, files: dict[str, str]) -> None:
    """Exit 1, naming each file, when `outdir` is not exactly what compile would write there."""
    stale = stale_files(outdir, files)
    if stale:
        click.echo(f"policyc: {len(stale)} file(s) in {outdir} are not what compile writes:", err=True)
        for path, why in stale:
            click.echo(f"  {path}: {why}", err=True)
        click.echo(f"policyc: run `policyc compile` with the same arguments and commit {outdir}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"{outdir} is up to date ({len(files)} files)", err=True)


# `verify --protocol`: the protocols each choice speaks.
VERIFIED_PROTOCOLS = {"h1": (HTTP1,), "h2": (H2C, H2), "all": PROTOCOLS}


@main.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--cases", "case_paths", multiple=True, type=click.Path(),
              help="case files (default: *.cases.yaml under PATHS)")
@click.option("--envoy", "runner", type=click.Choice(["process", "docker"]), default="process", show_default=True)
@click.option("--image", default=None,
              help="with --envoy docker: an Envoy image (default: one built from the local binary)")
@click.option("--examples", default=100, show_default=True, help="generated requests per service")
@click.option("--target", "targets", multiple=True, type=click.Choice(TARGETS), help="default: every target")
@click.option("--seed", default=0, show_default=True, help="seed of the generated requests")
@click.option("--protocol", type=click.Choice(sorted(VERIFIED_PROTOCOLS)), default="all", show_default=True,
              help="h1: HTTP/1.1; h2: HTTP/2 in the clear (h2c) and over TLS; all: both")
def verify_command(paths, case_paths, runner, image, examples, targets, seed, protocol):
    """Run the policies in a real Envoy and check that it decides every case and generated
    request as the interpreter does. Exit 1 on any difference."""
    from .harness.verify import verify

    policy_paths, found_cases = _case_paths(paths)
    pipeline = _checked_or_exit(_policy_paths(policy_paths))
    try:
        case_files = [load_case_file(p) for p in (case_paths or found_cases)]
    except CaseFileError as e:
        raise click.UsageError(str(e)) from None
    run = _runner(runner, image)
    targets = list(targets or TARGETS)
    spoken = VERIFIED_PROTOCOLS[protocol]
    cases = sum(len(set(protocols(case)) & set(spoken)) for f in case_files for case in f.cases)
    total = (cases + examples * len(pipeline.checked.services) * len(spoken)) * len(targets)
    with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
        report = verify(pipeline.checked, case_files, run, targets, examples, seed, bar.update, spoken)
    dropped = [r.name for s in pipeline.checked.services.values() for r in s.rules
               if not expressible(pipeline.checked, r)]
    if "rbac" in targets and dropped:
        click.echo(f"note: with --target rbac, {len(dropped)} rule(s) RBAC cannot express were left out: "
                   + ", ".join(dropped), err=True)
    for target, comparison in report.mismatches:
        click.echo(f"MISMATCH ({target}) {comparison.report()}")
    click.echo(f"{report.count - len(report.mismatches)} passed, {len(report.mismatches)} failed "
               f"({', '.join(targets)}; {', '.join(spoken)}; Envoy as a {runner})")
    sys.exit(EXIT_FAILED if report.mismatches else EXIT_OK)


def _runner(kind: str, image: str | None):
    if kind == "process":
        from .harness.envoy_process import running_envoy

        return running_envoy
    from .harness.container import ensure_docker, running_envoy_container

    try:
        ensure_docker()
    except RuntimeError as e:
        raise click.UsageError(str(e)) from None
    return partial(running_envoy_container, image=image)


@main.command("explain")
@click.argument("code", required=False)
def explain_command(code):
    """Explain a diagnostic code, with a wrong and a fixed example; without CODE, list the codes."""
    if code is None:
        for known, meaning in CODES.items():
            click.echo(f"{known:32} {meaning}")
        return
    text = explanation(code)
    if text is None:
        close = get_close_matches(code, list(CODES), n=1)
        raise click.UsageError(f"no diagnostic code {code!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    click.echo(text)


@main.command("lsp")
def lsp_command():
    """Run the language server on stdin/stdout (for editors)."""
    from .lsp import serve

    serve()


@main.command("diff")
@click.argument("sides", nargs=-1, required=True)
@click.option("--format", "output_format", type=click.Choice(["text", "markdown", "json"]), default="text")
@click.option("--fail-on", type=click.Choice(["broader", "any"]), default=None,
              help="exit 1 when the change admits more requests (broader or mixed), or changes any decision")
@click.option("--limit", default=20, show_default=True, help="example requests shown per service at most")
def diff_command(sides, output_format, fail_on, limit):
    """What a change does: OLD NEW as files or folders, or as git revisions of PATHS
    (`policyc diff origin/main HEAD -- policies/`). Per service: equivalent, narrower, broader,
    mixed or changed, and an example request for every kind of change of decision."""
    from contextlib import ExitStack

    from .analysis import diff, report
    from .analysis.revisions import RevisionError, materialize
    from .analysis.witness import AnalysisError

    if len(sides) < 2:
        raise click.UsageError("give OLD and NEW: two files or folders, or two revisions and `-- PATHS`")
    old, new, paths = sides[0], sides[1], list(sides[2:])
    with ExitStack() as stack:
        try:
            old_paths = materialize(old, paths, stack) if paths else [old]
            new_paths = materialize(new, paths, stack) if paths else [new]
        except RevisionError as e:
            raise click.UsageError(str(e)) from None
        before, after = (_checked_or_exit(_policy_paths(old_paths), f"old ({old})"),
                          _checked_or_exit(_policy_paths(new_paths), f"new ({new})"))
        try:
            found = diff(before.checked, after.checked, limit)
        except AnalysisError as e:
            click.echo(f"policyc: internal error, nothing reported: {e}", err=True)
            sys.exit(EXIT_USAGE)
    click.echo(report.RENDERERS[output_format](found))
    # Fail closed: a verdict the solver could not reach fails either gate.
    failing = {"broader": {"broader", "mixed", "undecided"}, "any": {"broader", "mixed", "narrower", "changed",
                                                                   "undecided"}}
    sys.exit(EXIT_FAILED if fail_on and found.verdict in failing[fail_on] else EXIT_OK)


@main.command("analyze")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
def analyze_command(paths, output_format):
    """Rules that never match, allow rules shadowed by deny rules or made redundant by other allow
    rules, and what callers without a token can reach."""
    from .analysis import analyze
    from .analysis.report import request_text

    pipeline = _checked_or_exit(_policy_paths(paths))
    findings = analyze(pipeline.checked)
    if output_format == "json":
        click.echo(json.dumps([f.to_json() for f in findings], indent=2, sort_keys=True))
        return
    for finding in findings:
        click.echo(f"{finding.service}: rule '{finding.rule}' [{finding.kind}]: {finding.message}")
        for line in request_text(finding.request) if finding.request else []:
            click.echo(f"    {line}")
    click.echo(f"policyc analyze: {len(findings)} finding(s)", err=True)


@main.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="the HTML file to write; left untouched on any error")
@click.option("--diff", "old", multiple=True, type=click.Path(), metavar="OLD",
              help="also show what changed since the policies in OLD (files or folders; repeatable)")
@click.option("--diff-revision", "revision", metavar="REV",
              help="also show what changed since git revision REV of the same PATHS (as `policyc diff`)")
@click.option("--no-findings", "skip_findings", is_flag=True,
              help="leave out the findings of analyze, whose questions grow with the square of the rules")
def report_command(paths, output, old, revision, skip_findings):
    """One self-contained HTML page: per service who may send what (exact, from the solver), the
    rules with their source, the diagnostics of check and the findings of analyze."""
    from contextlib import ExitStack

    from .analysis.revisions import RevisionError, materialize
    from .analysis.witness import AnalysisError
    from .report import build

    if old and revision:
        raise click.UsageError("give --diff or --diff-revision, not both")
    with ExitStack() as stack:
        try:
            old_paths = materialize(revision, list(paths), stack) if revision else list(old)
        except RevisionError as e:
            raise click.UsageError(str(e)) from None
        # The page names the old side as the user did: the revision's paths, not a temporary folder.
        old_names = [f"{revision}:{p}" for p in paths] if revision else list(old)
        pipeline = _checked_or_exit(_policy_paths(paths), "new" if old_paths else None)
        before = _checked_or_exit(_policy_paths(old_paths), f"old ({', '.join(old_names)})") if old_paths else None
        try:
            page = build(pipeline, list(paths), before, old_names, findings=not skip_findings)
        except AnalysisError as e:
            click.echo(f"policyc: internal error, nothing written: {e}", err=True)
            sys.exit(EXIT_INTERNAL)
    _write_atomically(output, page)
    click.echo(f"wrote {output} ({len(pipeline.checked.services)} services)", err=True)


@main.command("who-can")
@click.argument("method")
@click.argument("path")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--service", "service_name", required=True, help="the service the request is sent to")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
def who_can_command(method, path, paths, service_name, output_format):
    """Which callers may send METHOD PATH to a service: the conditions each rule leaves, and the
    answer for anonymous callers and every catalog user and group."""
    from dataclasses import asdict

    from .analysis import who_can

    pipeline = _checked_or_exit(_policy_paths(paths))
    if service_name not in pipeline.checked.services:
        raise click.UsageError(f"no service is named {service_name!r}")
    access = who_can(pipeline.checked, service_name, method, path)
    if output_format == "json":
        click.echo(json.dumps(asdict(access), indent=2, sort_keys=True))
        return
    click.echo(f"{method} {path} on {service_name}")
    click.echo("allowed when any of:" if access.allow else "no allow rule can match")
    for rule, condition in access.allow.items():
        click.echo(f"  {rule}: {condition}")
    if access.deny:
        click.echo("unless any of (deny):")
        for rule, condition in access.deny.items():
            click.echo(f"  {rule}: {condition}")
    click.echo(f"callers without a token or certificate: {access.anonymous}")
    for trust, verdict in access.certificates.items():
        click.echo(f"callers with a certificate from trust {trust} (no token): {verdict}")
    if access.callers:
        click.echo("catalog users and groups (a token, no certificate):")
    for ref, verdict in access.callers.items():
        click.echo(f"  {ref}: {verdict}")
