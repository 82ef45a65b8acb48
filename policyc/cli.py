"""Command line: `policyc check | fmt | eval | test | compile | verify | explain | lsp | diff | analyze |
who-can | what-can | report`, the operations commands, and the starting points `init` and `dev-certs`.
Shell completion is click's: `_POLICYC_COMPLETE=bash_source policyc` prints the bash script.

Artifacts go to stdout, diagnostics to stderr. Exit codes: 0 ok, 1 policy errors or failed
cases (or a failed `--fail-on` gate), 2 usage errors (options, and files, folders or ports named
that cannot be used: one line naming it), 3 an internal error (a bug in policyc, reported in one
line, not a traceback), 4 for `who-can` and `what-can`: the proxy refuses the request or caller
before any rule.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from difflib import get_close_matches, unified_diff
from functools import partial
from importlib.metadata import version
from pathlib import Path

import click

from . import nodes as n
from .backends import NATIVE_TARGETS, TARGETS, compile_dynamic, compile_outputs, expressible
from .backends.envoy import NATIVE_MODULE, NATIVE_SEARCH_PATH, Options
from .cases.casefile import CaseFileError, CaseResult, load_case_file, protocols, run_cases
from .cases.coverage import Coverage, rule_coverage
from .cases.junit import junit_xml
from .credentials import certs as devcerts
from .credentials import ed25519
from .dev import scaffold
from .dev.idp import DEFAULT_PORT, DevIdp, default_keys_path, mint_token
from .diagnostics import CODES, render_github, render_json, render_sarif, render_text, summary_line
from .explain import explanation, explanations
from .files import Unusable, using, why
from .grants import parse_duration, parse_time
from .interpret import evaluate
from .interpret.input import Built, Caller, Certificate, Entry, InputError, StandIns, read_entries
from .loader import decode_source, expand_inputs, read_policy_file
from .ops import approval, audit
from .ops import seal as sealing
from .ops.catalog_api import TOKEN_ENV, CatalogClient, CatalogError
from .ops.confirm import Confirmation, outcome
from .ops.deploy import Deployment, configmap, deploy, watch
from .ops.metrics import WatchMetrics, serving
from .output import create_files, stale_files, write_tree
from .pipeline import Pipeline, load_and_check
from .roots import Roots
from .semantics.hosts import upstream_problem
from .semantics.request import H2, H2C, HTTP1, PROTOCOLS, RequestError
from .source import Source
from .syntax import parse
from .syntax.printer import format_file, utc

# 4: `who-can` and `what-can` only: the proxy refuses the request or caller before any rule.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_REFUSED = 0, 1, 2, 3, 4


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


_ALLOW_PATH = click.option(
    "--allow-path", "allowed", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
    help="a folder, besides the inputs' own, that policies may read files from: imports, `jwks file`, "
         "`ca file`, `cert file`, `key file`, `catalog` (repeatable); any other file is refused")


def _locks_checked(pipeline: Pipeline) -> Pipeline:
    """The pipeline with every weakened locked template rule among its errors. The solver is
    loaded only for a set that has locked rules: most commands never need it."""
    if pipeline.checked is None or not any(r.locked for s in pipeline.checked.services.values() for r in s.rules):
        return pipeline
    from .analysis.locked import with_locks_checked

    return with_locks_checked(pipeline)


def _checked_or_exit(paths, allowed=(), label: str | None = None) -> Pipeline:
    """The checked policies, or their diagnostics and exit 1; `label` names which policies."""
    pipeline = _locks_checked(load_and_check(list(paths), allowed_roots=allowed))
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


class _Finite(click.FloatRange):
    """A number in a range, and finite: nan and the infinities pass every range's comparisons."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class _Time(click.ParamType):
    """An RFC 3339 time with its zone, in whole seconds (as grants write their windows) → seconds
    since the epoch."""

    name = "time"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        seconds = parse_time(value)
        if seconds is None:
            self.fail(f"{value!r} is no RFC 3339 time in whole seconds with a zone, e.g. 2026-12-04T20:00:00Z",
                      param, ctx)
        return seconds


class _Commands(click.Group):
    """The last resort: an exception that no stage turned into a diagnostic is a bug in policyc.
    It is named in one line on stderr with exit code 3, never shown as a traceback (unless
    POLICYC_TRACEBACK is set, for debugging). A file, folder or port the user named that cannot
    be used (`files.Unusable`) is no bug: one line naming it, exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Unusable as error:
            click.echo(f"policyc: {error}", err=True)
            sys.exit(EXIT_USAGE)
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

    Policies read files (imports, keys, certificates, catalogs) only under the folders given as
    inputs and each --allow-path DIR; any other is refused and never opened.

    Exit codes: 0 ok, 1 policy errors, failed cases or a failed --fail-on gate, 2 usage errors
    (files, folders or ports that cannot be used among them), 3 internal errors, 4 (who-can,
    what-can) the proxy refuses the request or caller before any rule.

    Shell completion: eval "$(_POLICYC_COMPLETE=bash_source policyc)" in ~/.bashrc
    (zsh_source in ~/.zshrc; fish: _POLICYC_COMPLETE=fish_source policyc | source).
    """


@main.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "output_format", type=click.Choice(["text", "json", "github", "sarif"]), default="text",
              help="text on stderr; or on stdout a JSON list, GitHub Actions annotations or a SARIF 2.1.0 log")
@_ALLOW_PATH
def check_command(paths, output_format, allowed):
    """Parse and check policies; print every diagnostic."""
    pipeline = _locks_checked(load_and_check(_policy_paths(paths), allowed_roots=allowed))
    _report(pipeline, output_format)
    if output_format in ("text", "github"):
        click.echo(f"policyc: {summary_line(pipeline.diagnostics)}", err=True)
    sys.exit(EXIT_OK if pipeline.ok else EXIT_FAILED)


STDIN = "<stdin>"  # how diagnostics name a policy read from stdin


@main.command("fmt")
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--check", "check_only", is_flag=True, help="write nothing; exit 1 if a file would change")
@click.option("--diff", "show_diff", is_flag=True,
              help="write nothing; print a unified diff of what would change, and exit 1 if anything would")
def fmt_command(paths, check_only, show_diff):
    """Rewrite policy files in the canonical layout (comments kept).

    With `-` as the only path, read a policy from stdin and write it, formatted, to stdout
    (diagnostics name it `<stdin>`)."""
    from_stdin = "-" in paths
    if from_stdin and len(paths) > 1:
        raise click.UsageError("`-` (stdin) cannot be given with other paths")
    rewrite = not (check_only or show_diff)
    changed, failed = [], False
    for path in [STDIN] if from_stdin else expand_inputs(_policy_paths(paths)):
        formatted = _formatted(path)
        if formatted is None:
            failed = True
            continue
        source, text = formatted
        if from_stdin and rewrite:
            _write_stdout(text)
        elif text != source.text:
            changed.append(path)
            if show_diff:
                _write_stdout(_unified_diff(path, source.text, text))
            elif rewrite:
                _write_atomically(path, text)
    for path in changed:
        click.echo(f"{'reformatted' if rewrite else 'would reformat'} {path}", err=True)
    sys.exit(EXIT_FAILED if failed or (changed and not rewrite) else EXIT_OK)


def _formatted(path: str) -> tuple[Source, str] | None:
    """A policy's text (from stdin for `STDIN`) and the same in the canonical layout; None, with
    its diagnostics reported, when it cannot be read or has errors."""
    if path == STDIN:
        source, diagnostics = decode_source(STDIN, sys.stdin.buffer.read())
    else:
        source, diagnostics = read_policy_file(path)
    file = None
    if source is not None:
        file, diagnostics = parse(source)
    if file is None or diagnostics:
        _report(Pipeline(None, {source.path: source} if source else {}, diagnostics))
        return None
    return source, format_file(file, source)


def _unified_diff(path: str, old: str, new: str) -> str:
    """What formatting changes in a file, as a unified diff that `patch -p0` applies."""
    lines = []
    for line in unified_diff(_lines_of(old), _lines_of(new), path, path):
        lines.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(lines)


def _lines_of(text: str) -> list[str]:
    """The lines of a text, each with its line feed. Lines end at line feeds only, as the parser
    counts them, not at the other breaks `str.splitlines` knows (a form feed is a blank here)."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def _write_stdout(text: str) -> None:
    """Policy text, or a diff of it, to stdout in UTF-8 as files hold it, whatever the locale."""
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


def _write_atomically(path: str, text: str) -> None:
    """`path` replaced by `text` at once, or `Unusable` naming it (left as it was)."""
    temporary = f"{path}.policyc-tmp"
    with using(path, "write"):
        try:
            with open(temporary, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _read_json(path: str, what: str):
    """The JSON a file the user named holds; `Unusable` naming it and `what` it is otherwise."""
    with using(path, f"read {what}"):
        text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except ValueError as e:
        raise Unusable(f"{what} {path} is not JSON: {e}") from None
    except RecursionError:
        raise Unusable(f"{what} {path} is nested too deeply to read") from None


def _read_jwks(pairs, checked) -> dict[str, dict]:
    """`--jwks ISSUER=FILE`: the keys a declared issuer with a remote `jwks` would publish."""
    keys = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"takes ISSUER=FILE, not {pair!r}", param_hint="--jwks")
        issuer = checked.issuers.get(name)
        if issuer is None:
            close = get_close_matches(name, list(checked.issuers), n=1)
            raise click.BadParameter(f"no issuer is named {name!r}" + (f"; did you mean {close[0]!r}?" if close
                                                                       else ""), param_hint="--jwks")
        if name in checked.keys:
            raise click.BadParameter(f"issuer {name!r} reads its keys from its `jwks file`; --jwks is for "
                                     "issuers with a remote `jwks`", param_hint="--jwks")
        jwks = _read_json(path, "JWKS")
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise Unusable(f'JWKS {path} is not a JSON object {{"keys": [ … ]}}')
        keys[name] = jwks
    return keys


_NOW_OPTION = click.option("--now", type=_Finite(min=0, max=253402300799), default=None, metavar="SECONDS",
                           help="the time, in seconds since the epoch (up to the end of the year 9999)")


def _given_caller(issuer, claims, trust, uris, dns, subject) -> Caller | None:
    """The caller of eval's token (--issuer, --claim) and certificate (--trust, --uri, --dns,
    --subject) options, or None when none is given."""
    certificate = None
    if uris or dns or subject is not None or trust is not None:
        certificate = Certificate(trust, tuple(uris), tuple(dns), subject or "")
    if claims and issuer is None:
        raise click.UsageError("--claim needs --issuer: the issuer of the token that holds the claims")
    if issuer is None and certificate is None:
        return None
    return Caller(issuer, _claims(claims), certificate)


def _read_entries(path: str) -> tuple[list[Entry], bool]:
    """The requests of `path` (`-`: stdin), and whether they are a batch."""
    name = "<stdin>" if path == "-" else path
    with using(name, "read request"), click.open_file(path, encoding="utf-8") as f:
        text = f.read()
    return read_entries(text, name, as_yaml=path.endswith((".yaml", ".yml")))


def _built(entries: list[Entry], stand_ins: StandIns, given: Caller | None) -> list[Built]:
    """Every request ready to decide; or each problem, located, and exit 2 with nothing decided."""
    built, problems = [], []
    for entry in entries:
        if entry.problem is not None:
            problems.append(entry.problem)
            continue
        try:
            built.append(stand_ins.build(entry.data, given))
        except (InputError, RequestError) as e:
            problems.append(f"{entry.where}: {e}")
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        click.echo(f"policyc eval: {len(problems)} request(s) not valid; nothing decided", err=True)
        sys.exit(EXIT_USAGE)
    return built


def _decision_lines(decision) -> list[str]:
    lines = [f"{decision.status} {decision.reason}" + (f" by rule {decision.rule!r}" if decision.rule else "")
             + (f" in service {decision.service!r}" if decision.service else "")]
    if decision.dry_run:
        lines.append(f"dry-run: the policy would have answered {decision.enforced_status}")
    if decision.grpc_status is not None:
        lines.append(f"a gRPC call: HTTP 200 with grpc-status {decision.grpc_status}")
    if decision.detail:
        lines.append(decision.detail)
    caller = decision.caller
    named = ([f"{caller.get('sub') or 'a token without sub'} (issuer {caller['issuer']})"] if "issuer" in caller
             else []) + ([f"certificate {caller['peer']}"] if "peer" in caller else [])
    if named:
        lines.append(f"caller: {', '.join(named)}")
    return lines


@main.command("eval")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--request", "--input", "request_path", required=True, metavar="FILE|-",
              help="the request as JSON (YAML for a .yaml file), or a batch as JSON lines; - reads stdin. "
                   "Fields: method, path, host, headers, source, protocol, caller (docs/eval.md)")
@click.option("--json", "as_json", is_flag=True, help='print {"status", "rule", "reason", …}, a line per request')
@click.option("--fail", "fail_on_deny", is_flag=True,
              help="exit 1 when any request is denied (by the policy, the proxy, or a dry-run service's policy)")
@click.option("--issuer", default=None, metavar="NAME",
              help="the caller sends a token of this declared issuer, its signature taken as valid")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE",
              help="a claim of that token; VALUE as JSON (true, 42, [\"a\"]), else a string (repeatable)")
@click.option("--trust", default=None, metavar="NAME",
              help="the caller presents a client certificate issued by this trust's CA, its chain taken as "
                   "valid [default: the only trust]")
@click.option("--uri", "uris", multiple=True, metavar="URI",
              help="a URI SAN of that certificate, e.g. a SPIFFE ID (repeatable)")
@click.option("--dns", "dns", multiple=True, metavar="NAME", help="a DNS SAN of that certificate (repeatable)")
@click.option("--subject", default=None, metavar="DN", help="that certificate's subject, e.g. CN=deploy-bot,O=CI")
@click.option("--jwks", "jwks", multiple=True, metavar="ISSUER=FILE",
              help="keys an issuer with a remote `jwks` would publish, for tokens in the requests' headers")
@_NOW_OPTION
@click.option("--at", "at", type=_Time(), default=None, metavar="TIME",
              help="the time, as RFC 3339 (2026-12-04T20:00:00Z): tokens' time claims and grants' windows read it")
@_ALLOW_PATH
def eval_command(paths, request_path, as_json, fail_on_deny, issuer, claims, trust, uris, dns, subject, jwks, now,
                 at, allowed):
    """Decide requests with the reference interpreter, and say why.

    The caller may be given directly, on the command line for every request or as a request's
    `caller`: a token's issuer and claims, a client certificate's names. Eval decides it as
    Envoy decides a caller sending that token or certificate, with the token's signature and the
    certificate's chain taken as valid; time claims and grants' windows are checked against
    --at (or --now), the clock by default.

    \b
    echo '{"method": "GET", "path": "/api/v1/payments/1", "host": "payments.internal"}' |
      policyc eval policies --request - --issuer backstage \\
        --claim sub=user:default/bob --claim 'ent=["group:default/sre"]'
    policyc eval policies --request requests.jsonl --json --fail
    """
    if at is not None and now is not None:
        raise click.UsageError("give the time once: --at or --now")
    now = at if at is not None else now
    given = _given_caller(issuer, claims, trust, uris, dns, subject)
    entries, batch = _read_entries(request_path)
    pipeline = _checked_or_exit(_policy_paths(paths), allowed)
    keys, now = _read_jwks(jwks, pipeline.checked), time.time() if now is None else now
    built = _built(entries, StandIns(pipeline.checked, now), given)
    decisions = [evaluate(pipeline.checked, b.request, now, {**keys, **b.keys}, b.trusts) for b in built]
    for entry, decision in zip(entries, decisions, strict=True):
        if as_json:
            click.echo(json.dumps(decision.to_json(), sort_keys=True))
        elif batch:
            click.echo(f"{entry.where}: " + "; ".join(_decision_lines(decision)))
        else:
            click.echo("\n".join(_decision_lines(decision)))
    denied = sum(d.reason != "allow" for d in decisions)
    if fail_on_deny:
        click.echo(f"policyc eval: {denied} of {len(decisions)} request(s) denied", err=True)
    sys.exit(EXIT_FAILED if fail_on_deny and denied else EXIT_OK)


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
@_NOW_OPTION
@click.option("-v", "--verbose", is_flag=True, help="print every case, not only failures")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False),
              help="also write the results as a JUnit XML report to this file")
@click.option("--run", "pattern", metavar="REGEX",
              help="run only the cases whose name this regular expression matches (anywhere in the name)")
@click.option("--coverage", "show_coverage", is_flag=True,
              help="also report rule coverage: the rules that decided no passing case")
@click.option("--coverage-min", type=_Finite(0, 100), default=None, metavar="PERCENT",
              help="exit 1 when fewer than PERCENT of the rules decided a passing case (implies --coverage)")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text, or one JSON object on stdout: every case, the totals and, when asked for, the coverage")
@_ALLOW_PATH
def test_command(paths, now, verbose, junit_path, pattern, show_coverage, coverage_min, output_format,
                 allowed):
    """Run policy unit tests: case files (*.cases.yaml) against the policies given with them.
    A rule is covered when it decided a passing case (see docs/language.md)."""
    policy_paths, case_paths = _case_paths(paths)
    if not case_paths:
        raise click.UsageError("no case files (*.cases.yaml) among the given paths")
    selected = _case_pattern(pattern)
    pipeline = _checked_or_exit(_policy_paths(policy_paths), allowed)
    suites = _run_case_files(pipeline.checked, case_paths, now, selected)
    results = [result for _, found in suites for result in found]
    if not results and selected is not None:
        raise click.UsageError(f"no case name matches --run {pattern!r}")
    failed = sum(not result.passed for result in results)
    covered = rule_coverage(pipeline.checked, results) if show_coverage or coverage_min is not None else None
    if junit_path:
        _write_atomically(junit_path, junit_xml(suites))
    if output_format == "json":
        click.echo(json.dumps(_test_json(results, covered), indent=2, sort_keys=True))
    else:
        _print_results(results, verbose, covered)
    below = coverage_min is not None and covered.below(coverage_min)
    if below:
        click.echo(f"policyc: rule coverage {covered.percent}% is under --coverage-min {coverage_min:g}%", err=True)
    sys.exit(EXIT_FAILED if failed or below else EXIT_OK)


def _case_pattern(pattern: str | None) -> re.Pattern | None:
    try:
        return None if pattern is None else re.compile(pattern)
    except re.error as e:
        raise click.BadParameter(f"{pattern!r} is not a regular expression: {e}", param_hint="--run") from None


def _run_case_files(checked, case_paths: list[str], now: float | None,
                    selected: re.Pattern | None) -> list[tuple[str, list[CaseResult]]]:
    """Each case file with the results of its cases (those `selected` names, when given); a case
    file that cannot be read ends the run with exit 1. Files with no selected case are left out."""
    suites = []
    for case_path in case_paths:
        try:
            case_file = load_case_file(case_path)
        except CaseFileError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_FAILED)
        if selected is not None:
            case_file = replace(case_file, cases=[c for c in case_file.cases if selected.search(c.name)])
        if case_file.cases:
            suites.append((case_path, run_cases(checked, case_file, now)))
    return suites


def _print_results(results: list[CaseResult], verbose: bool, covered: Coverage | None) -> None:
    for result in results:
        if not result.passed or verbose:
            click.echo(f"{'PASS' if result.passed else 'FAIL'} {result.case.where} {result.case.name}")
            for failure in result.failures:
                click.echo(f"     {failure}")
    failed = sum(not result.passed for result in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if covered is not None:
        click.echo(covered.text())


def _test_json(results: list[CaseResult], covered: Coverage | None) -> dict:
    failed = sum(not result.passed for result in results)
    report = {"passed": len(results) - failed, "failed": failed, "cases": [
        {"name": r.case.name, "where": r.case.where, "passed": r.passed, "failures": list(r.failures),
         "decisions": {protocol: d.to_json() for protocol, d in r.decisions.items()}} for r in results]}
    if covered is not None:
        report["coverage"] = covered.to_json()
    return report


def _envoy_options(command):
    """The emitted Envoy's target, addresses and access log: shared by compile, deploy and watch."""
    for option in reversed([
        click.option("--target", type=click.Choice(TARGETS), default="auto", show_default=True,
                     help="Envoy's RBAC, Lua, or RBAC wherever it can express a rule set and Lua for the rest "
                          "(auto); or the native filter, which Envoy loads as libpolicyc_native.so from "
                          "$ENVOY_DYNAMIC_MODULES_SEARCH_PATH; auto-native: for an Envoy that loads it, RBAC "
                          "where it expresses a whole service, else the native filter"),
        click.option("--listen", default="127.0.0.1:10000", show_default=True, help="the listener's address"),
        click.option("--admin", default="127.0.0.1:9901", show_default=True, help="the admin interface's address"),
        click.option("--access-log", default="/dev/stdout", show_default=True,
                     help="where Envoy writes JSON access logs"),
        # Envoy's durations (protobuf's) end at 10,000 years: it refuses a config with a longer one.
        click.option("--jwks-refresh", type=click.IntRange(1, 315_576_000_000), default=10, show_default=True,
                     metavar="SECONDS",
                     help="how often Envoy fetches a remote JWKS again (a rotated key works from then on)"),
        click.option("--otlp", default=None, metavar="HOST:PORT",
                     help="an OpenTelemetry collector (OTLP over gRPC) that Envoy sends each request's span and "
                          "access-log record to; without it, trace ids are still read or started, logged and "
                          "passed upstream"),
    ]):
        command = option(command)
    return command


def _options(listen: str, admin: str, access_log: str, jwks_refresh: int, otlp: str | None = None) -> Options:
    if otlp is not None and upstream_problem(otlp) is not None:
        raise click.BadParameter(f"{otlp!r} is not host:port", param_hint="--otlp")
    for name, address in (("--listen", listen), ("--admin", admin)):
        # Port 0 lets Envoy pick a free port; the admin interface's /listeners tells which.
        if upstream_problem(address.removesuffix(":0") + ":1" if address.endswith(":0") else address) is not None:
            raise click.BadParameter(f"{address!r} is not host:port", param_hint=name)
    return Options(listen, admin, access_log, jwks_refresh_seconds=jwks_refresh, otlp=otlp)


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
@click.option("--parts", is_flag=True,
              help="also write each service's filter configs under services/ (RBAC YAML, Lua source), copies of "
                   "what envoy.yaml holds, for an Envoy of your own")
@_envoy_options
@_ALLOW_PATH
def compile_command(paths, outdir, output_format, mount_path, name, check_only, parts, target, listen, admin,
                    access_log, jwks_refresh, otlp, allowed):
    """Compile policies to Envoy configuration: envoy.yaml (and, with --parts, each service's
    filters), or a ConfigMap holding a bootstrap and the clusters, listener and routes it reloads."""
    if (outdir is None) == (output_format == "files"):
        raise click.UsageError("--output is needed with --format files, and only then")
    options = _options(listen, admin, access_log, jwks_refresh, otlp)
    pipeline = _checked_or_exit(_policy_paths(paths), allowed)
    if output_format == "configmap":
        compiled = compile_dynamic(pipeline.checked, target, options, mount_path)
    else:
        compiled = compile_outputs(pipeline.checked, target, options, parts)
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
        with using(outdir, "read"):
            _check_tree(outdir, compiled.files)
        return
    with using(outdir, "write"):
        write_tree(outdir, compiled.files)
    click.echo(f"wrote {len(compiled.files)} files to {outdir}", err=True)


def _report_deployment(deployment: Deployment, folder: str) -> None:
    _report(Pipeline(None, deployment.pipeline.sources, deployment.diagnostics))
    if deployment.version is None:
        click.echo(f"policyc: {summary_line(deployment.diagnostics)}; nothing deployed", err=True)
        return
    # The version is the second word either way, for scripts.
    done = f"deployed {deployment.version} to" if deployment.published_at is not None else \
        f"unchanged {deployment.version} in"
    click.echo(f"{done} {folder} (" + ", ".join(f"{name}: {plan}" for name, plan in sorted(deployment.plans.items()))
               + ")")


_TO_OPTION = click.option("--to", "folder", required=True, type=click.Path(file_okay=False),
                          help="the folder Envoy watches: run `envoy -c FOLDER/envoy.yaml`")


def _live_catalog_options(command):
    """Where a live Backstage catalog is, and its token: shared by deploy and watch."""
    for option in reversed([
        click.option("--catalog", "catalog_url", metavar="URL",
                     help="read the catalog from a running Backstage catalog's REST API (its base URL, e.g. "
                          "http://127.0.0.1:7007/api/catalog) instead of the policies' catalog folders"),
        click.option("--catalog-token-file", type=click.Path(dir_okay=False), metavar="FILE",
                     help=f"a file holding the catalog's service token [default: ${TOKEN_ENV}]"),
    ]):
        command = option(command)
    return command


def _confirm_options(failing: str):
    """--confirm and --confirm-timeout: shared by deploy and watch, which differ in what a deploy an
    Envoy did not take does (`failing`)."""
    def options(command):
        command = click.option("--confirm-timeout", type=_Finite(min=0.1), default=10.0, show_default=True,
                               metavar="SECONDS", help="with --confirm: how long each Envoy may take")(command)
        return click.option("--confirm", "envoy_admins", multiple=True, metavar="HOST:PORT", callback=_admin_addresses,
                            help="the admin interface of a running Envoy on the folder (repeatable): wait until "
                                 f"it serves what was deployed, and {failing} if it rejects a file or has not "
                                 "taken it in time")(command)
    return options


def _catalog_client(url: str | None, token_file: str | None) -> CatalogClient | None:
    """The live catalog named by --catalog, with its token from the file or the environment
    (never from the command line, where other users could read it)."""
    if url is None:
        if token_file is not None:
            raise click.UsageError("--catalog-token-file needs --catalog")
        return None
    if token_file is not None:
        with using(token_file, "read the catalog token from"):
            token = Path(token_file).read_text(encoding="utf-8").strip()
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if token_file is not None and not token:
        raise click.BadParameter(f"{token_file!r} is empty", param_hint="--catalog-token-file")
    if any(not " " < c < "\x7f" for c in token):
        raise click.BadParameter("the token holds spaces or control characters", param_hint="--catalog-token-file"
                                 if token_file else f"${TOKEN_ENV}")
    try:
        return CatalogClient(url, token or None)
    except ValueError as error:
        raise click.BadParameter(f"{url!r} {error}", param_hint="--catalog") from None


# A name or IPv4 address, or an IPv6 address in brackets; then a port. Nothing that a URL would
# read as more (a user, a path), since --confirm's values become one.
_HOST_PORT = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):([0-9]{1,5})")


def _host_port(text: str, option: str) -> tuple[str, int]:
    found = _HOST_PORT.fullmatch(text)
    if found is None or int(found[3]) > 65535:
        raise click.BadParameter(f"{text!r} is not host:port", param_hint=option)
    return found[1] or found[2], int(found[3])


def _admin_addresses(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    """--confirm's values, each checked to be host:port before anything is read or written."""
    for value in values:
        _host_port(value, "--confirm")
    return values


@main.command("deploy")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_TO_OPTION
@_envoy_options
@_live_catalog_options
@_ALLOW_PATH
@_confirm_options("fail (exit 1)")
def deploy_command(paths, folder, target, listen, admin, access_log, jwks_refresh, otlp, catalog_url,
                   catalog_token_file, allowed, envoy_admins, confirm_timeout):
    """Check and compile policies, then publish them by atomic renames into a watched folder:
    running Envoys switch to them without a restart. Prints the policy version. An Envoy keeps its
    old policy when it rejects a new one: --confirm asks it whether it took the new one."""
    options = _options(listen, admin, access_log, jwks_refresh, otlp)
    catalog = _catalog_client(catalog_url, catalog_token_file)
    confirmation = Confirmation(envoy_admins)
    if confirmation.unreachable:
        raise Unusable(f"{next(iter(confirmation.unreachable.values()))}; nothing deployed")
    try:
        live = catalog.fetch() if catalog else None
    except CatalogError as error:
        raise Unusable(f"{error}; nothing deployed") from None
    with using(folder, "deploy to"):
        deployment = deploy(_policy_paths(paths), folder, target, options, allowed, live)
    _report_deployment(deployment, folder)
    if deployment.version is None:
        sys.exit(EXIT_FAILED)
    problems = confirmation.problems(deployment.versions, confirm_timeout, renamed=deployment.published_at is not None)
    for envoy, problem in problems.items():
        line = outcome(envoy, deployment.version, problem)
        click.echo(line if problem is None else f"policyc: {line}", err=problem is not None)
    sys.exit(EXIT_FAILED if any(problems.values()) else EXIT_OK)


@main.command("watch")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_TO_OPTION
@_envoy_options
@_live_catalog_options
@click.option("--catalog-period", type=_Finite(min=0.1), default=30.0, show_default=True, metavar="SECONDS",
              help="with --catalog: how often the catalog is read again")
@click.option("--metrics", "metrics_address", metavar="HOST:PORT",
              help="serve Prometheus metrics of deploys, confirmations and catalog reads at "
                   "http://HOST:PORT/metrics")
@_ALLOW_PATH
@_confirm_options("log and count it (policyc_watch_confirm_failing)")
def watch_command(paths, folder, target, listen, admin, access_log, jwks_refresh, otlp, catalog_url,
                  catalog_token_file, catalog_period, metrics_address, allowed, envoy_admins, confirm_timeout):
    """Deploy, then deploy again whenever a file the policies read changes (their .policy files,
    imports, catalog, key and certificate files; nothing else, so logs may sit beside them). A
    policy with errors is reported and not deployed; Envoy keeps the last good one. A deploy
    that leaves the version as it was prints nothing. With --catalog, the live catalog is read
    every --catalog-period seconds and a change deploys; a failed read is logged and counted, and
    the last good policy stays. With --confirm, each deploy waits until every Envoy named serves
    it, and logs and counts one that rejected it or has not taken it, asking it again until it
    has. Stop with Ctrl-C."""
    options = _options(listen, admin, access_log, jwks_refresh, otlp)
    catalog = _catalog_client(catalog_url, catalog_token_file)
    metrics = WatchMetrics()
    with contextlib.ExitStack() as stack:
        if metrics_address is not None:
            address = _host_port(metrics_address, "--metrics")
            with using(metrics_address, "serve metrics on"):
                server = stack.enter_context(serving(address, metrics))
            host, port = server.server_address[:2]
            click.echo(f"metrics at http://{host}:{port}/metrics", err=True)
        with contextlib.suppress(KeyboardInterrupt), using(folder, "deploy to"):
            watch(_policy_paths(paths), folder, partial(_report_deployment, folder=folder), target, options,
                  allowed_roots=allowed, catalog=catalog, catalog_period=catalog_period, metrics=metrics,
                  log=lambda line: click.echo(f"policyc: {line}", err=True), confirm=envoy_admins,
                  confirm_timeout=confirm_timeout)


class _AuditCommands(click.Group):
    """`policyc audit LOG…` is `policyc audit events LOG…`: the queries predate the subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["events", *args]
        return super().parse_args(ctx, args)


@main.group("audit", cls=_AuditCommands)
def audit_group():
    """Who did what through which rule, from Envoy's JSON access logs (`policyc audit LOG…` is
    `policyc audit events LOG…`); and tamper evidence for those logs: keygen, seal, verify-log."""


def _moment(text: str | None, option: str):
    """--since / --until as a time, or a usage error naming the option."""
    if text is None:
        return None
    try:
        return audit.parse_since(text)
    except OverflowError:
        raise click.BadParameter(f"{text!r} reaches back before the year 1", param_hint=option) from None
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither an ISO 8601 time nor a duration like 15m",
                                 param_hint=option) from None


_VERDICTS = (audit.ALLOWED, audit.DENIED, audit.WOULD_DENY, audit.UNKNOWN)


@audit_group.command("events")
# A line that is not UTF-8 is read with replacement characters: it is then a log entry or not.
@click.argument("logs", nargs=-1, required=True, type=click.File("r", encoding="utf-8", errors="replace"))
@click.option("--service", default=None, help="only this service's requests")
@click.option("--since", default=None, metavar="TIME",
              help="only requests from TIME on: ISO 8601 (UTC unless a zone is given) or a duration back, e.g. 2h")
@click.option("--until", default=None, metavar="TIME", help="only requests before TIME (as --since)")
@click.option("--caller", default=None, metavar="WHO",
              help="only this caller's requests: a token's sub, a certificate's URI SANs or subject")
@click.option("--path", "path_prefix", default=None, metavar="PREFIX", help="only requests whose path starts so")
@click.option("--rule", default=None, metavar="[SERVICE/]RULE", help="only requests this rule decided")
@click.option("--verdict", "verdicts", multiple=True, type=click.Choice(_VERDICTS),
              help="only requests with this verdict (repeatable)")
@click.option("--denials", is_flag=True, help="only denials and dry-run would-denies (--verdict denied "
                                              "--verdict would-deny)")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="json and csv are written as the logs are read, for logs of any size")
def audit_events_command(logs, service, since, until, caller, path_prefix, rule, verdicts, denials, output_format):
    """Who accessed what through which rule, what was denied, and what dry-run services would
    have denied, from Envoy's JSON access logs (`-` reads stdin), with each request's trace id."""
    query = audit.Query(service, _moment(since, "--since"), _moment(until, "--until"), caller, path_prefix, rule,
                        frozenset(verdicts) | ({audit.DENIED, audit.WOULD_DENY} if denials else set()))
    reader = audit.Reader()
    events = reader.events((line for log in logs for line in log), query)
    if output_format == "table":
        click.echo(audit.render_table(events, reader))
    elif output_format == "json":
        audit.write_json(events, reader, sys.stdout)
    else:
        audit.write_csv(events, sys.stdout)


def _key_pem(path: str, allowed: tuple[str, ...], *also: str) -> bytes:
    """A key file's bytes, read only under the current folder, the folders of `also` (the seal)
    and --allow-path folders, as a policy's files are (roots.py)."""
    if not Roots.of([".", *also], allowed).admits(path):
        raise click.BadParameter(f"{path!r} is outside the folders keys are read from; --allow-path DIR adds one",
                                 param_hint="--key")
    with using(path, "read key"):
        return Path(path).read_bytes()


def _seal_records(seal_path: str) -> list[dict]:
    if not os.path.exists(seal_path):
        return []
    with using(seal_path, "read seal"):
        text = Path(seal_path).read_text(encoding="utf-8")
    try:
        return sealing.read_records(text.splitlines())
    except sealing.SealError as error:
        raise Unusable(f"cannot read seal {seal_path}: {error}") from None


def _segments(paths) -> Iterator[tuple[str, sealing.Digests]]:
    for path in paths:
        with using(path, "read log segment"), open(path, "rb") as stream:
            digests = sealing.digest_segment(stream)
        yield os.path.basename(path), digests


_KEY = click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), metavar="FILE",
                    help="the Ed25519 key: private to seal; public (or private) to verify")
_SEAL = click.option("--seal", "seal_path", required=True, type=click.Path(dir_okay=False), metavar="FILE",
                     help="the seal file: JSON lines, one signed record per segment")
_KEY_FOLDERS = click.option(
    "--allow-path", "allowed", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
    help="a folder, besides the current one and the seal's, that --key may be read from (repeatable)")


@audit_group.command("keygen")
@click.argument("key_path", type=click.Path(dir_okay=False), metavar="KEY")
def audit_keygen_command(key_path):
    """Write a new Ed25519 key for sealing logs: KEY (private, mode 0600) and KEY.pub."""
    _write_key_pair(key_path)


def _write_key_pair(key_path: str) -> None:
    private, public = ed25519.new_pair()
    folder, name = os.path.split(key_path)
    with using(key_path, "write key"):
        try:
            create_files(folder or ".", {name: private, f"{name}.pub": public})
        except FileExistsError as error:  # never replace a key: what it signed could no longer be checked
            raise Unusable(f"cannot write key {key_path}: it would replace {error}") from None
    click.echo(f"wrote {key_path} and {key_path}.pub")


@audit_group.command("seal")
@click.argument("segments", nargs=-1, required=True, type=click.Path(dir_okay=False))
@_KEY
@_SEAL
@_KEY_FOLDERS
def audit_seal_command(segments, key_path, seal_path, allowed):
    """Append closed log SEGMENTS (oldest first) to the seal: each record holds a segment's
    digests and the previous record's chain value, and is signed. Prints the new chain head;
    keep it elsewhere, so that records cut off the end of the seal show (verify-log --head)."""
    try:
        key = ed25519.private_key(_key_pem(key_path, allowed, seal_path))
        records = _seal_records(seal_path)
        if problems := sealing.check_records(records, key.public_key()):
            raise Unusable(f"will not extend seal {seal_path}: {problems[0]}")
        added = sealing.seal(records, _segments(segments), key)
    except (sealing.SealError, ed25519.KeyProblem) as error:
        raise Unusable(f"cannot seal: {error}") from None
    with using(seal_path, "write seal"), open(seal_path, "a", encoding="utf-8") as out:
        out.write(sealing.dump(added))
    lines = sum(record["lines"] for record in added)
    click.echo(f"sealed {len(added)} segment(s), {lines} lines; chain head {added[-1]['chain']}")


@audit_group.command("verify-log")
@click.argument("segments", nargs=-1, type=click.Path(dir_okay=False))
@_KEY
@_SEAL
@click.option("--head", default=None, metavar="CHAIN", help="the chain head the seal must end at")
@_KEY_FOLDERS
def audit_verify_log_command(segments, key_path, seal_path, head, allowed):
    """Prove that SEGMENTS, given in the order they were sealed, are every sealed segment,
    complete and unedited: each deleted, inserted, edited or moved line is named by file and
    line. Exit 0 when they are, 1 when not."""
    try:
        key = ed25519.public_key(_key_pem(key_path, allowed, seal_path))
    except (sealing.SealError, ed25519.KeyProblem) as error:
        raise Unusable(f"cannot read key {key_path}: {error}") from None
    if not os.path.exists(seal_path):
        raise Unusable(f"cannot read seal {seal_path}: no such file or directory")
    records = _seal_records(seal_path)
    findings = sealing.verify(records, list(_segments(segments)), key, head)
    for finding in findings:
        click.echo(str(finding))
    if findings:
        click.echo(f"{len(findings)} problem(s): the logs are not as sealed", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"verified {len(records)} segment(s), {sum(r['lines'] for r in records)} lines, "
               f"signed by key {sealing.fingerprint(key)}; chain head "
               f"{records[-1]['chain'] if records else sealing.GENESIS}")


def _json_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _claims(pairs) -> dict:
    """k=v pairs; a value that is JSON (true, 42, ["a","b"]) is taken as such, anything else
    (NaN and Infinity too, which no token can hold) as a string."""
    claims = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"takes NAME=VALUE, not {pair!r}", param_hint="--claim")
        if name in claims:
            raise click.BadParameter(f"claim {name!r} given twice", param_hint="--claim")
        try:
            claims[name] = json.loads(value, parse_constant=_json_constant)
        except (ValueError, RecursionError):
            claims[name] = value
    return claims


_KEYS_OPTION = click.option("--keys", "keys_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                            help="the development signing keys (created when missing) [default: "
                                 "$XDG_STATE_HOME/policyc/dev-idp.json]")


@main.group("token")
def token_group():
    """Development tokens, signed by the keys `policyc dev-idp` publishes."""


# Development tokens outlive no trial; the bound also keeps `exp` far inside every verifier's range.
_TEN_YEARS = 10 * 365 * 24 * 3600


@token_group.command("mint")
@_KEYS_OPTION
@click.option("--issuer", default=None, help="the `iss` claim [default: the issuer of the last dev-idp started]")
@click.option("--sub", required=True, help="the `sub` claim, e.g. user:default/alice")
@click.option("--audience", "audiences", multiple=True, help="the `aud` claim (repeat for a list)")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE", help="any other claim (repeatable)")
@click.option("--expires-in", type=click.IntRange(min=1, max=_TEN_YEARS), default=3600, show_default=True,
              metavar="SECONDS", help="seconds until `exp` (ten years at most)")
def token_mint_command(keys_path, issuer, sub, audiences, claims, expires_in):
    """Print a signed JWT for local trials and tests."""
    click.echo(mint_token(keys_path or default_keys_path(), sub, _claims(claims), issuer, audiences, expires_in))


@main.command("dev-idp")
@_KEYS_OPTION
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="the port on 127.0.0.1 (0: any free port)")
@click.option("--rotate-every", type=_Finite(min=1, max=_TEN_YEARS), default=None, metavar="SECONDS",
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


@main.command("init")
@click.argument("folder", default=".", type=click.Path(file_okay=False, path_type=Path))
def init_command(folder):
    """Start a policy repository in FOLDER (default: here): an issuer served by `policyc dev-idp`,
    a service, its case file, the Envoy configuration they compile to and a GitHub workflow that
    runs check, test, verify and compile --check. No existing file is replaced."""
    files = scaffold.project_files(folder)
    policies, compiled = scaffold.project_layout()
    # `compile` replaces its output folder as a whole: one already there is not init's to fill.
    _create_or_exit(folder, files, new_folders=(compiled,))
    made = [(f"{policies}/common.policy", "the development issuer, `dev`"),
            (f"{policies}/hello.policy", "the service `hello` and its rules"),
            (f"{policies}/hello.cases.yaml", "their unit tests"),
            (f"{compiled}/", "the Envoy configuration they compile to"),
            (scaffold.WORKFLOW_PATH, "check, test, verify and compile --check in GitHub Actions")]
    width = max(len(path) for path, _ in made)
    click.echo(f"created in {folder}:\n" + "\n".join(f"  {path:{width}}  {what}" for path, what in made), err=True)
    click.echo(f"""next, in {folder}:
  policyc test {policies} --coverage
  policyc dev-idp &  # serves the issuer's keys on 127.0.0.1:{DEFAULT_PORT}
  envoy -c {compiled}/envoy.yaml  # listens on 127.0.0.1:10000; hello's upstream is 127.0.0.1:8080
  curl -H "host: hello.internal" http://127.0.0.1:10000/api/greetings \\
      -H "authorization: Bearer $(policyc token mint --sub user:default/bob --audience hello)"
after each change: policyc compile {policies} -o {compiled}, and commit both""", err=True)


@main.command("dev-certs")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--server-dns", multiple=True, metavar="NAME",
              help="a DNS name of the listener's certificate (repeatable) [default: localhost]")
@click.option("--no-server", is_flag=True, help="no listener certificate: only client certificates, from the CA")
@click.option("--spiffe-id", "spiffe_ids", multiple=True, metavar="[NAME=]ID",
              help="a client certificate with this SPIFFE ID (URI SAN), as NAME.pem and NAME.key; NAME "
                   "defaults to the ID's last path segment (repeatable)")
@click.option("--client-dns", multiple=True, metavar="[NAME=]DNS",
              help="a client certificate with this DNS SAN, as NAME.pem and NAME.key; NAME defaults to "
                   "the name (repeatable)")
# A hundred years at most: a certificate's dates end with the year 9999, and these are for trials.
@click.option("--days", type=click.IntRange(1, 36500), default=365, show_default=True, metavar="DAYS",
              help="how long the listener and client certificates are valid (a hundred years at most)")
def dev_certs_command(folder, server_dns, no_server, spiffe_ids, client_dns, days):
    """Write development certificates into FOLDER as PEM files: a CA (ca.pem, ca.key), the
    listener's (server.pem, server.key) and client certificates with SPIFFE IDs or DNS names.
    A CA already in FOLDER issues the new certificates; no existing file is replaced. Private
    keys are readable by their owner alone. For local trials and tests only."""
    if no_server and server_dns:
        raise click.UsageError("--server-dns names the listener's certificate: not with --no-server")
    try:
        clients = [scaffold.spiffe_client(v) for v in spiffe_ids] + [scaffold.dns_client(v) for v in client_dns]
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    ca = _existing_ca(folder)
    if ca is not None and no_server and not clients:
        raise click.UsageError("nothing to write: the CA exists; ask for client certificates")
    try:
        files = scaffold.certificate_files(ca, () if no_server else server_dns or ("localhost",), clients, days)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    _create_or_exit(folder, files)
    for name in files:
        click.echo(f"wrote {folder / name}", err=True)
    click.echo("\n" + _certificate_settings(folder, "server.pem" in files), err=True)


def _certificate_settings(folder: Path, server: bool) -> str:
    """The `tls` and `trust` blocks that use the files of `dev-certs`, to paste into a policy."""
    def quoted(name: str) -> str:
        return json.dumps(str(folder / name))  # a policy string: JSON's escapes

    lines = ["# the paths as given to dev-certs: in a policy, a path is relative to the .policy file"]
    if server:
        lines += ["tls {", f"    cert file {quoted('server.pem')}", f"    key file {quoted('server.key')}", "}"]
    lines += ["trust dev {", f"    ca file {quoted('ca.pem')}", "}",
              "# a case presents a client certificate with `certificate: {chain: NAME.pem, key: NAME.key}`"]
    return "\n".join(lines)


def _existing_ca(folder: Path):
    """The CA whose files are in `folder`, or None when neither is; exit 1 on half a CA or a bad one."""
    paths = [folder / name for name in scaffold.CA_FILES]
    present = [p.exists() for p in paths]
    if not any(present):
        return None
    if not all(present):
        click.echo(f"policyc: {paths[present.index(False)]} is missing beside {paths[present.index(True)]}", err=True)
        sys.exit(EXIT_FAILED)
    with using(folder, "read the CA in"):
        certificate, key = paths[0].read_bytes(), paths[1].read_bytes()
    try:
        return devcerts.load_ca(certificate, key)
    except ValueError as e:
        click.echo(f"policyc: cannot use the CA in {folder}: {e}", err=True)
        sys.exit(EXIT_FAILED)


def _create_or_exit(folder: Path, files: dict[str, str], new_folders: tuple[str, ...] = ()) -> None:
    """`create_files`, or one line on stderr: files in the way (exit 1), or a write that failed
    (`Unusable`, exit 2)."""
    try:
        create_files(folder, files, new_folders)
    except FileExistsError as e:
        # create_files names what is in the way; the system, a file where a folder must go.
        click.echo(f"policyc: not replacing what exists: {e.filename or e}; nothing written", err=True)
        sys.exit(EXIT_FAILED)
    except OSError as e:
        raise Unusable(f"cannot write {e.filename or folder}: {why(e)}; nothing written") from None


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


# `verify`'s targets unless named: the native ones need its library on Envoy's module search path.
VERIFIED_BY_DEFAULT = tuple(target for target in TARGETS if target not in NATIVE_TARGETS)
# `verify --protocol`: the protocols each choice speaks.
VERIFIED_PROTOCOLS = {"h1": (HTTP1,), "h2": (H2C, H2), "all": PROTOCOLS}


@main.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--cases", "case_paths", multiple=True, type=click.Path(),
              help="case files (default: *.cases.yaml under PATHS)")
@click.option("--envoy", "runner", type=click.Choice(["process", "docker"]), default="process", show_default=True)
@click.option("--image", default=None,
              help="with --envoy docker: an Envoy image (default: one built from the local binary)")
@click.option("--examples", type=click.IntRange(min=0), default=100, show_default=True,
              help="generated requests per service")
@click.option("--target", "targets", multiple=True, type=click.Choice(TARGETS),
              help=f"default: {', '.join(VERIFIED_BY_DEFAULT)} ({', '.join(NATIVE_TARGETS)} when named: "
                   "Envoy loads the native library)")
@click.option("--seed", default=0, show_default=True, help="seed of the generated requests")
@click.option("--protocol", type=click.Choice(sorted(VERIFIED_PROTOCOLS)), default="all", show_default=True,
              help="h1: HTTP/1.1; h2: HTTP/2 in the clear (h2c) and over TLS; all: both")
@_ALLOW_PATH
def verify_command(paths, case_paths, runner, image, examples, targets, seed, protocol, allowed):
    """Run the policies in a real Envoy and check that it decides every case and generated
    request as the interpreter does. Exit 1 on any difference."""
    from .proof.verify import verify

    policy_paths, found_cases = _case_paths(paths)
    pipeline = _checked_or_exit(_policy_paths(policy_paths), allowed)
    try:
        case_files = [load_case_file(p) for p in (case_paths or found_cases)]
    except CaseFileError as e:
        raise click.UsageError(str(e)) from None
    targets = list(targets or VERIFIED_BY_DEFAULT)
    if set(targets) & set(NATIVE_TARGETS):
        _require_native_library(image if runner == "docker" else None)
    run = _runner(runner, image)
    spoken = VERIFIED_PROTOCOLS[protocol]
    cases = sum(len(set(protocols(case)) & set(spoken)) for f in case_files for case in f.cases)
    total = (cases + examples * len(pipeline.checked.services) * len(spoken)) * len(targets)
    if total == 0:  # a run that compares nothing must not pass as a verification
        raise click.UsageError("nothing to verify: no cases, and no generated requests (--examples 0 or no services)")
    with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
        report = verify(pipeline.checked, case_files, run, targets, examples, seed, bar.update, spoken)
    for target in targets:
        dropped = [r.name for s in pipeline.checked.services.values() for r in s.rules
                   if not expressible(pipeline.checked, r, target)]
        if dropped:
            click.echo(f"note: with --target {target}, {len(dropped)} rule(s) it cannot express were left out: "
                       + ", ".join(dropped), err=True)
    for target, comparison in report.mismatches:
        click.echo(f"MISMATCH ({target}) {comparison.report()}")
    click.echo(f"{report.count - len(report.mismatches)} passed, {len(report.mismatches)} failed "
               f"({', '.join(targets)}; {', '.join(spoken)}; Envoy as a {runner})")
    sys.exit(EXIT_FAILED if report.mismatches else EXIT_OK)


def _require_native_library(image: str | None) -> None:
    """Envoy, started by `verify`, can load the native filter's library, or a usage error says why.
    The image `verify` builds carries the library it finds there too; an image of one's own must
    hold it and set the variable itself."""
    from .proof.envoy_process import native_library

    if image is None and native_library() is None:
        raise click.UsageError(f"--target {'/'.join(NATIVE_TARGETS)}: Envoy loads lib{NATIVE_MODULE}.so from "
                               f"${NATIVE_SEARCH_PATH}, which does not hold it; build it with `make native` and "
                               "set the variable to native_runtime/build")


def _runner(kind: str, image: str | None):
    if kind == "process":
        from .proof.envoy_process import envoy_binary, running_envoy

        try:
            envoy_binary()
        except FileNotFoundError as e:
            raise click.UsageError(str(e)) from None
        return running_envoy
    from .proof.container import ensure_docker, running_envoy_container

    try:
        ensure_docker()
    except RuntimeError as e:
        raise click.UsageError(str(e)) from None
    return partial(running_envoy_container, image=image)


def _complete_code(ctx, param, incomplete: str) -> list[str]:
    """Shell completion of `policyc explain CODE`: the diagnostic codes."""
    return [code for code in CODES if code.startswith(incomplete)]


@main.command("explain")
@click.argument("code", required=False, shell_complete=_complete_code)
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
    from .editor.lsp import serve

    serve()


@main.command("diff")
@click.argument("sides", nargs=-1, required=True)
@click.option("--format", "output_format", type=click.Choice(["text", "markdown", "json"]), default="text")
@click.option("--fail-on", type=click.Choice(["broader", "any"]), default=None,
              help="exit 1 when the change admits more requests (broader or mixed), or changes any decision")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="example requests shown per service at most")
@_ALLOW_PATH
def diff_command(sides, output_format, fail_on, limit, allowed):
    """What a change does: OLD NEW as files or folders, or as git revisions of PATHS
    (`policyc diff origin/main HEAD -- policies/`). Per service: equivalent, narrower, broader,
    mixed or changed, and an example request for every kind of change of decision. With
    revisions, each --allow-path folder is taken at each revision too."""
    from contextlib import ExitStack

    from .analysis import diff
    from .analysis import render as report
    from .analysis.revisions import RevisionError
    from .analysis.witness import AnalysisError

    if len(sides) < 2:
        raise click.UsageError("give OLD and NEW: two files or folders, or two revisions and `-- PATHS`")
    old, new, paths = sides[0], sides[1], list(sides[2:])
    # After `--` every word is a path: an option there would otherwise reach git as a pathspec.
    options = {name for param in click.get_current_context().command.params for name in param.opts}
    if misplaced := [word for word in paths if word.split("=")[0] in options]:
        raise click.UsageError(f"{misplaced[0]} after `--` is read as a path: put options before `--`")
    with ExitStack() as stack:
        try:
            old_paths, old_allowed = _materialized(old, paths, allowed, stack) if paths else ([old], allowed)
            new_paths, new_allowed = _materialized(new, paths, allowed, stack) if paths else ([new], allowed)
        except RevisionError as e:
            raise click.UsageError(str(e)) from None
        before, after = (_checked_or_exit(_policy_paths(old_paths), old_allowed, f"old ({old})"),
                          _checked_or_exit(_policy_paths(new_paths), new_allowed, f"new ({new})"))
        try:
            found = diff(before.checked, after.checked, limit)
        except AnalysisError as e:
            click.echo(f"policyc: internal error, nothing reported: {e}", err=True)
            sys.exit(EXIT_INTERNAL)
    click.echo(report.RENDERERS[output_format](found))
    sys.exit(EXIT_FAILED if found.fails(fail_on) else EXIT_OK)


def _materialized(revision: str, paths, allowed, stack) -> tuple[list[str], list[str]]:
    """`paths` and the `--allow-path` folders as they are at `revision`, in one temporary tree:
    the policies of a revision read only that revision's files."""
    from .analysis.revisions import materialize

    found = materialize(revision, [*paths, *allowed], stack)
    return found[:len(paths)], found[len(paths):]


# `analyze --fail-on`: a severity (it and those above it), a kind, or `any`.
_ANALYZE_GATES = ["any", "warning", "note", "never-matches", "shadowed", "redundant", "anonymous"]


@main.command("analyze")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
@_ALLOW_PATH
@click.option("--fail-on", "fail_on", multiple=True, type=click.Choice(_ANALYZE_GATES),
              help="exit 1 on a finding of this severity (warning; note: every finding), of this kind, or on "
                   "any finding (repeatable); a rule the solver could not answer for fails every gate")
@click.option("--usage", "logs", multiple=True, type=click.File("r", encoding="utf-8", errors="replace"),
              metavar="LOG", help="instead, what a window of Envoy access logs used of the policy (repeatable; "
                                  "`-` reads stdin): rules, memberships and owners that allowed nothing, "
                                  "access never used, and what removing the unused allow rules would change")
@click.option("--since", default=None, metavar="TIME", help="with --usage: the window's start (as audit's)")
@click.option("--until", default=None, metavar="TIME", help="with --usage: the window's end (as audit's)")
def analyze_command(paths, output_format, fail_on, allowed, logs, since, until):
    """Rules that never match, allow rules shadowed by deny rules or made redundant by other allow
    rules, and what callers without a token can reach through rules not marked `public`. Each
    finding is a warning, or a note for a redundant rule. With --usage, least privilege from
    the logs instead."""
    from .analysis import analyze
    from .analysis.render import request_text

    pipeline = _checked_or_exit(_policy_paths(paths), allowed)
    if logs:
        _usage_report(pipeline.checked, logs, audit.Query(since=_moment(since, "--since"),
                                                           until=_moment(until, "--until")), output_format)
        return
    findings = analyze(pipeline.checked)
    failing = [f for f in findings if f.fails(fail_on)]
    if output_format == "json":
        click.echo(json.dumps([f.to_json() for f in findings], indent=2, sort_keys=True))
        sys.exit(EXIT_FAILED if failing else EXIT_OK)
    for finding in findings:
        click.echo(f"{finding.service}: rule '{finding.rule}' [{finding.kind}]: {finding.message}")
        for line in request_text(finding.request) if finding.request else []:
            click.echo(f"    {line}")
    click.echo(f"policyc analyze: {len(findings)} finding(s)"
               + (f", {len(failing)} failing --fail-on {' '.join(fail_on)}" if failing else ""), err=True)
    sys.exit(EXIT_FAILED if failing else EXIT_OK)


def _usage(checked, logs, query: audit.Query):
    from .ops import usage

    return usage.usage(checked, audit.Reader().events((line for log in logs for line in log), query))


def _usage_report(checked, logs, query: audit.Query, output_format: str) -> None:
    """`analyze --usage`: the usage of the window, then the `policyc diff` of the policy against
    itself without the allow rules that allowed nothing."""
    from .analysis import diff
    from .analysis import render as report
    from .ops import usage

    found = _usage(checked, logs, query)
    cost = diff(checked, usage.without_rules(checked, found.unused_allow))
    if output_format == "json":
        click.echo(json.dumps({**found.to_json(), "removal": json.loads(report.RENDERERS["json"](cost))}, indent=2))
        return
    for line in usage.render_text(found):
        click.echo(line)
    if found.unused_allow:
        click.echo("\nwhat removing those allow rules would change (policyc diff):")
        click.echo(report.RENDERERS["text"](cost))


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
@click.option("--usage", "logs", multiple=True, type=click.File("r", encoding="utf-8", errors="replace"),
              metavar="LOG", help="beside each access matrix, what these Envoy access logs never used "
                                  "(as analyze --usage; repeatable)")
@click.option("--since", default=None, metavar="TIME", help="with --usage: the window's start (as audit's)")
@click.option("--until", default=None, metavar="TIME", help="with --usage: the window's end (as audit's)")
@_ALLOW_PATH
def report_command(paths, output, old, revision, skip_findings, logs, since, until, allowed):
    """One self-contained HTML page: per service who may send what (exact, from the solver), the
    rules with their source, the diagnostics of check and the findings of analyze."""
    from contextlib import ExitStack

    from .analysis.revisions import RevisionError
    from .analysis.witness import AnalysisError
    from .report import build

    if old and revision:
        raise click.UsageError("give --diff or --diff-revision, not both")
    with ExitStack() as stack:
        try:
            old_paths, old_allowed = (_materialized(revision, paths, allowed, stack) if revision
                                      else (list(old), allowed))
        except RevisionError as e:
            raise click.UsageError(str(e)) from None
        # The page names the old side as the user did: the revision's paths, not a temporary folder.
        old_names = [f"{revision}:{p}" for p in paths] if revision else list(old)
        pipeline = _checked_or_exit(_policy_paths(paths), allowed, "new" if old_paths else None)
        before = (_checked_or_exit(_policy_paths(old_paths), old_allowed, f"old ({', '.join(old_names)})")
                  if old_paths else None)
        try:
            window = audit.Query(since=_moment(since, "--since"), until=_moment(until, "--until"))
            used = _usage(pipeline.checked, logs, window).to_json() if logs else None
            page = build(pipeline, list(paths), before, old_names, findings=not skip_findings, usage=used)
        except AnalysisError as e:
            click.echo(f"policyc: internal error, nothing written: {e}", err=True)
            sys.exit(EXIT_INTERNAL)
    _write_atomically(output, page)
    click.echo(f"wrote {output} ({len(pipeline.checked.services)} services)", err=True)


def _target_host(checked, service_name: str | None, host: str | None) -> str:
    """The host a question is sent to: `--host` as given, or the first host of `--service`."""
    if (service_name is None) == (host is None):
        raise click.UsageError("give --service or --host (one of them)")
    if host is not None:
        return host
    if service_name not in checked.services:
        close = get_close_matches(service_name, list(checked.services), n=1)
        raise click.UsageError(f"no service is named {service_name!r}" + (f"; did you mean {close[0]!r}?" if close
                                                                          else ""))
    return checked.services[service_name].hosts[0]


def _access_text(method: str, target: str, access, reading, refusals, several: bool) -> None:
    over = f" (over {', '.join(reading.protocols)})" if several or refusals else ""
    click.echo(f"{method} {reading.path} on {access.service}{over}")
    if reading.path != target:
        click.echo(f"the proxy normalizes {target} to {reading.path}")
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


@main.group("grant")
def grant_group():
    """Just-in-time access as a reviewed change: request a grant (a file for review), approve
    and sign it, and make the key approvals are signed with (docs/operations.md)."""


@grant_group.command("request")
@click.argument("path", type=click.Path(dir_okay=False), metavar="FILE")
@click.option("--name", required=True, metavar="NAME", help="the grant's name; its rule is grant/NAME")
@click.option("--service", required=True, metavar="SERVICE", help="the service the grant opens")
@click.option("--who", required=True, metavar="CONDITION", help='the grantee, e.g. \'token.sub == "alice"\'')
@click.option("--what", required=True, metavar="CONDITION", help='what they may do, e.g. \'path prefix "/debug/"\'')
@click.option("--from", "start", type=_Time(), default=None, metavar="TIME", help="the window's start [default: now]")
@click.option("--until", "end", type=_Time(), default=None, metavar="TIME", help="the window's end")
@click.option("--for", "duration", default=None, metavar="DURATION", help="the window's length instead, e.g. 2h")
@click.option("--reason", required=True, metavar="TEXT", help="why: a ticket, an incident")
@click.option("--requested-by", default=None, metavar="NAME", help="who asks for it")
def grant_request_command(path, name, service, who, what, start, end, duration, reason, requested_by):
    """Write FILE, a new grant for review: not yet approved, so `check` refuses it until someone
    else runs `policyc grant approve` on it."""
    start = int(time.time()) if start is None else start
    if (end is None) == (duration is None):
        raise click.UsageError("give the window's end once: --until or --for")
    if duration is not None:
        seconds = parse_duration(duration)
        if not seconds:
            raise click.BadParameter(f"{duration!r} is no duration, e.g. 90m, 8h or 1d12h", param_hint="--for")
        end = start + seconds
    try:
        text = approval.request_text(name, service, who, what, start, end, reason, requested_by)
    except approval.ApprovalError as error:
        raise click.UsageError(str(error)) from None
    folder, file = os.path.split(path)
    with using(path, "write grant"):
        try:
            create_files(folder or ".", {file: text})
        except FileExistsError:
            raise Unusable(f"cannot write grant {path}: it exists") from None
    click.echo(f"wrote {path}: grant {name} for service {service}, {utc(start)} until {utc(end)}; "
               "have someone else approve it with `policyc grant approve`")


@grant_group.command("approve")
@click.argument("path", type=click.Path(dir_okay=False, exists=False), metavar="FILE")
@click.option("--approver", required=True, metavar="NAME", help="who approves: never the grantee")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), metavar="KEY",
              help="the Ed25519 private key whose public half the policies' `grants { key file }` names")
@click.option("--name", default=None, metavar="NAME", help="the grant to approve, when FILE holds several")
@_KEY_FOLDERS
def grant_approve_command(path, approver, key_path, name, allowed):
    """Record the approver of the grant in FILE and sign it: the file is rewritten in canonical
    form (comments kept). Any change after this breaks the signature, and `check` refuses it."""
    with using(path, "read grant"):
        text = Path(path).read_text(encoding="utf-8")
    try:
        key = ed25519.private_key(_key_pem(key_path, allowed, path))
        approved = approval.approve(path, text, approver, key, name)
    except (approval.ApprovalError, ed25519.KeyProblem) as error:  # refused, not misused: exit 1, as a failed check
        click.echo(f"policyc: cannot approve {path}: {error}", err=True)
        sys.exit(EXIT_FAILED)
    with using(path, "write grant"):
        _write_atomically(path, approved)
    click.echo(f"approved {path} as {approver}")


@grant_group.command("keygen")
@click.argument("key_path", type=click.Path(dir_okay=False), metavar="KEY")
def grant_keygen_command(key_path):
    """Write a new Ed25519 key for approving grants: KEY (private, mode 0600, for approvers) and
    KEY.pub (for the policies' `grants { key file "KEY.pub" }`)."""
    _write_key_pair(key_path)


@main.command("grants")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--at", "at", type=_Time(), default=None, metavar="TIME", help="the time to list them at [default: now]")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object per grant, a line each")
@_ALLOW_PATH
def grants_command(paths, at, as_json, allowed):
    """List the grants of the policies: active, upcoming and expired, with their windows."""
    pipeline = _checked_or_exit(_policy_paths(paths), allowed)
    listed = approval.listing(pipeline.checked.policy_set, at)
    for grant in listed:
        if as_json:
            click.echo(json.dumps(grant.to_json(), sort_keys=True))
        else:
            click.echo(f"{grant.state:8}  {grant.name}  service {grant.service}  {utc(grant.start)} until "
                       f"{utc(grant.end)}  approved by {grant.approved_by}: {grant.reason}")
    if not listed and not as_json:
        click.echo("no grants")


@main.command("who-can")
@click.argument("method")
@click.argument("path")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--service", "service_name", help="the service the request is sent to (at its first host)")
@click.option("--host", help="the host the request is sent to (the :authority, or the Host header)")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
@_ALLOW_PATH
def who_can_command(method, path, paths, service_name, host, output_format, allowed):
    """Which callers may send METHOD PATH to a service (--service) or host (--host): the
    conditions each rule leaves, and the answer for anonymous callers, certificate holders and
    every catalog user and group. PATH is the request-target as sent: the rules see it as the
    proxy normalizes it, over HTTP/1.1, h2c and h2. A request the proxy refuses before any rule
    (400, 404, a reset HTTP/2 stream) over every protocol gets the proxy's answers and exit 4."""
    from .analysis import who_can
    from .analysis.admission import read_request

    pipeline = _checked_or_exit(_policy_paths(paths), allowed)
    checked = pipeline.checked
    host = _target_host(checked, service_name, host)
    try:
        readings, refusals = read_request(checked, method, path, host)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    answers = [(reading, who_can(checked, reading.service, method, reading.path)) for reading in readings]
    if output_format == "json":
        click.echo(json.dumps({"method": method, "target": path, "host": host,
                               "refused": [asdict(r) for r in refusals], "answers": [
            {"protocols": list(reading.protocols)} | asdict(access) for reading, access in answers]},
            indent=2, sort_keys=True))
    elif not answers:
        click.echo(f"{method} {path} to host {host} never reaches a rule: the proxy refuses it")
        click.echo("\n".join(f"  {refusal}" for refusal in refusals))
    else:
        for refusal in refusals:
            click.echo(f"refused by the proxy before any rule over {refusal}")
        for reading, access in answers:
            _access_text(method, path, access, reading, refusals, len(answers) > 1)
    sys.exit(EXIT_OK if answers else EXIT_REFUSED)


def _caller(checked, anonymous, issuer, claims, user, groups, trust, uris, dns, subject):
    """The caller the what-can options describe, or a usage error."""
    from .analysis.callers import Caller, caller_problem, canonical_subject

    token = issuer is not None or user is not None or bool(groups)
    if anonymous and (token or trust or claims):
        raise click.UsageError("--anonymous takes no token or certificate options")
    if not anonymous and not token and trust is None:
        raise click.UsageError("describe the caller: --anonymous, or a token (--issuer, --user, --group) and/or "
                               "a client certificate (--trust)")
    if claims and not token:
        raise click.UsageError("--claim needs a token: give --issuer, --user or --group")
    if (uris or dns or subject is not None) and trust is None:
        raise click.UsageError("--uri, --dns and --subject describe a certificate: give --trust")
    issuers = (issuer,) if issuer is not None else ()
    if token and not issuers:
        issuers = tuple(sorted(name for name, i in checked.issuers.items() if i.catalog_users))
        if not issuers:
            raise click.UsageError("no issuer is marked `catalog users`: give --issuer")
    claims = _claims(claims)
    for option, name, value in (("--user", "sub", user), ("--group", "ent", groups)):
        if value and name in claims:
            raise click.UsageError(f"{option} sets the `{name}` claim: give one or the other")
    if user is not None:
        claims["sub"] = _catalog_ref(checked, user, "user", "--user")
    if groups:
        claims["ent"] = [_catalog_ref(checked, group, "group", "--group") for group in groups]
    try:
        subject = canonical_subject(subject) if subject is not None else None
    except ValueError:
        raise click.BadParameter(f"{subject!r} is not an RFC 4514 name, e.g. CN=deploy-bot,O=CI",
                                 param_hint="--subject") from None
    caller = Caller(issuers, claims, trust, tuple(uris), tuple(dns), subject)
    if (problem := caller_problem(checked, caller)) is not None:
        raise click.UsageError(problem)
    return caller


def _catalog_ref(checked, ref: str, kind: str, option: str) -> str:
    from .catalog import normalize_ref

    found = normalize_ref(ref, kind)
    if found is None or not found.startswith(f"{kind}:") or not checked.catalog.has(found):
        known = [r for r in checked.catalog.entities if r.startswith(f"{kind}:")]
        close = get_close_matches(found or ref, known, n=1)
        raise click.BadParameter(f"the catalog has no {kind} {ref!r}" + (f"; did you mean {close[0]!r}?" if close
                                                                          else ""), param_hint=option)
    return found


def _endpoint_text(matrix) -> None:
    from .analysis.matrix import NEVER

    service = matrix.service
    click.echo(f"{service.name} ({', '.join(service.hosts)})" + (" [dry-run]" if service.mode is n.Mode.DRY_RUN
                                                                 else ""))
    never = 0
    for c, column in enumerate(matrix.columns):
        cell = matrix.cells[0, c]
        if cell.verdict == NEVER:
            never += 1
            continue
        why = ""
        if cell.allowed:
            why = f"  by rule '{cell.allowed.rule}'"
        if cell.denied:
            why += f"; else {f'refused by rule {cell.denied.rule!r}' if cell.denied.rule else 'default deny'}"
        click.echo(f"  {cell.verdict:9}  {column.label}{why}")
    if never:
        click.echo("  never      " + (f"{never} other endpoint(s)" if never < len(matrix.columns) else "anything"))


def _endpoint_json(matrix) -> dict:
    service = matrix.service
    endpoints = []
    for c, column in enumerate(matrix.columns):
        cell = matrix.cells[0, c]
        endpoints.append({"endpoint": column.label, "methods": list(column.methods) if column.methods else None,
                          "verdict": cell.verdict, "rules": cell.rules,
                          "allowed": cell.allowed.example.description if cell.allowed else None,
                          "denied": cell.denied.example.description if cell.denied else None})
    return {"service": service.name, "hosts": list(service.hosts), "mode": service.mode.value,
            "endpoints": endpoints}


@main.command("what-can")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--anonymous", is_flag=True, help="a caller with neither token nor client certificate")
@click.option("--issuer", help="a token from this issuer")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE",
              help="a claim of the token (repeatable; a value that is JSON is taken as such)")
@click.option("--user", help="a catalog user: a token whose `sub` is the user (from the issuers marked "
                             "`catalog users`, unless --issuer)")
@click.option("--group", "groups", multiple=True, help="a catalog group the token's `ent` lists (repeatable)")
@click.option("--trust", help="a client certificate from this trust")
@click.option("--uri", "uris", multiple=True, help="a URI SAN of the certificate (repeatable)")
@click.option("--dns", "dns", multiple=True, help="a DNS SAN of the certificate (repeatable)")
@click.option("--subject", help="the certificate's subject, e.g. CN=deploy-bot,O=CI [default: any]")
@click.option("--service", "service_name", help="only this service")
@click.option("--host", help="only the service this host is routed to")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
@_ALLOW_PATH
def what_can_command(paths, anonymous, issuer, claims, user, groups, trust, uris, dns, subject, service_name, host,
                     output_format, allowed):
    """What one caller may do: per service, the endpoints (the method and path tests of its
    rules) the caller may call, `always` or `sometimes` (depending on headers or source), with the
    rule that admits it. The token carries exactly the claims given (`iss`, the times and, unless
    given, `aud` are those of a valid token); the certificate exactly the SANs given. A caller the
    token check refuses never reaches a rule: exit 4."""
    from .analysis.admission import read_request
    from .analysis.callers import what_can
    from .analysis.witness import AnalysisError

    pipeline = _checked_or_exit(_policy_paths(paths), allowed)
    checked = pipeline.checked
    caller = _caller(checked, anonymous, issuer, claims, user, groups, trust, uris, dns, subject)
    services = sorted(checked.services)
    if service_name is not None or host is not None:
        readings, refusals = read_request(checked, "GET", "/", _target_host(checked, service_name, host))
        if not readings:
            raise click.BadParameter(f"no service is reached: {'; '.join(map(str, refusals))}", param_hint="--host")
        services = [readings[0].service]
    try:
        access = what_can(checked, caller, services)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    except AnalysisError as e:
        click.echo(f"policyc: internal error, nothing reported: {e}", err=True)
        sys.exit(EXIT_INTERNAL)
    if access.refused is not None:
        if output_format == "json":
            click.echo(json.dumps({"caller": caller.to_json(), "refused": access.refused, "services": []},
                                  indent=2, sort_keys=True))
        else:
            click.echo(f"{caller.describe()}: never reaches a rule: {access.refused}")
        sys.exit(EXIT_REFUSED)
    if output_format == "json":
        click.echo(json.dumps({"caller": caller.to_json(), "refused": None,
                               "services": [_endpoint_json(m) for m in access.matrices]}, indent=2, sort_keys=True))
        return
    click.echo(f"caller: {caller.describe()}")
    for matrix in access.matrices:
        _endpoint_text(matrix)
