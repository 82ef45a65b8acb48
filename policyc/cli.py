"""Command line: `policyc check | fmt | eval | test` (and the backends' commands as they come).

Artifacts go to stdout, diagnostics to stderr. Exit codes: 0 ok, 1 policy errors or failed
cases, 2 usage errors.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial

import click
import yaml

from .backends import TARGETS, compile_outputs
from .backends.envoy import Options
from .backends.rbac import expressible
from .casefile import CaseFileError, load_case_file, run_cases
from .check import upstream_problem
from .diagnostics import render_json, render_text, summary_line
from .interpret import RawRequest, evaluate
from .loader import expand_inputs, load
from .output import write_tree
from .pipeline import Pipeline, load_and_check
from .syntax import parse
from .syntax.printer import format_file

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _report(pipeline: Pipeline, output_format: str = "text") -> None:
    """Diagnostics to stderr (JSON to stdout with --format json)."""
    if output_format == "json":
        click.echo(render_json(pipeline.diagnostics))
        return
    for diagnostic in pipeline.diagnostics:
        click.echo(render_text(diagnostic, pipeline.sources) + "\n", err=True)


def _checked_or_exit(paths: tuple[str, ...]) -> Pipeline:
    pipeline = load_and_check(list(paths))
    _report(pipeline)
    if not pipeline.ok:
        click.echo(f"policyc: {summary_line(pipeline.diagnostics)}", err=True)
        sys.exit(EXIT_FAILED)
    return pipeline


def _policy_paths(paths) -> list[str]:
    """Inputs as policy paths: files as given, folders for their `.policy` files; none → usage error."""
    if not expand_inputs(list(paths)):
        raise click.UsageError("no .policy files among the given paths")
    return list(paths)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="policyc")
def main() -> None:
    """Identity-aware access policies for services behind Envoy.

    Exit codes: 0 ok, 1 policy errors or failed cases, 2 usage errors.
    """


@main.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              help="text on stderr, or a JSON list on stdout")
def check_command(paths, output_format):
    """Parse and check policies; print every diagnostic."""
    pipeline = load_and_check(_policy_paths(paths))
    _report(pipeline, output_format)
    if output_format == "text":
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
def test_command(paths, now, verbose):
    """Run policy unit tests: case files (*.cases.yaml) against the policies given with them."""
    policy_paths, case_paths = _case_paths(paths)
    if not case_paths:
        raise click.UsageError("no case files (*.cases.yaml) among the given paths")
    pipeline = _checked_or_exit(_policy_paths(policy_paths))
    passed = failed = 0
    for case_path in case_paths:
        try:
            results = run_cases(pipeline.checked, load_case_file(case_path), now)
        except CaseFileError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_FAILED)
        for result in results:
            passed += result.passed
            failed += not result.passed
            if not result.passed or verbose:
                status = "PASS" if result.passed else "FAIL"
                click.echo(f"{status} {result.case.where} {result.case.name}")
                for failure in result.failures:
                    click.echo(f"     {failure}")
    click.echo(f"{passed} passed, {failed} failed")
    sys.exit(EXIT_OK if failed == 0 else EXIT_FAILED)



@main.command("compile")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="folder to write; replaced as a whole, and left untouched on any error")
@click.option("--target", type=click.Choice(TARGETS), default="auto", show_default=True,
              help="native RBAC, Lua, or RBAC wherever it can express a rule set and Lua for the rest")
@click.option("--listen", default="127.0.0.1:10000", show_default=True, help="the listener's address")
@click.option("--admin", default="127.0.0.1:9901", show_default=True, help="the admin interface's address")
@click.option("--access-log", default="/dev/stdout", show_default=True, help="where Envoy writes JSON access logs")
def compile_command(paths, outdir, target, listen, admin, access_log):
    """Compile policies to Envoy configuration: envoy.yaml, lds.yaml and per-service filters."""
    for name, address in (("--listen", listen), ("--admin", admin)):
        if upstream_problem(address) is not None:
            raise click.BadParameter(f"{address!r} is not host:port", param_hint=name)
    pipeline = _checked_or_exit(_policy_paths(paths))
    compiled = compile_outputs(pipeline.checked, target, Options(listen, admin, access_log))
    if compiled.diagnostics:
        _report(Pipeline(None, pipeline.sources, compiled.diagnostics))
        click.echo(f"policyc: {summary_line(compiled.diagnostics)}; nothing written", err=True)
        sys.exit(EXIT_FAILED)
    write_tree(outdir, compiled.files)
    for name, plan in sorted(compiled.plans.items()):
        click.echo(f"{name}: {plan}", err=True)
    click.echo(f"wrote {len(compiled.files)} files to {outdir}", err=True)


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
def verify_command(paths, case_paths, runner, image, examples, targets, seed):
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
    total = (sum(len(f.cases) for f in case_files) + examples * len(pipeline.checked.services)) * len(targets)
    with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
        report = verify(pipeline.checked, case_files, run, targets, examples, seed, bar.update)
    dropped = [r.name for s in pipeline.checked.services.values() for r in s.rules
               if not expressible(pipeline.checked, r)]
    if "rbac" in targets and dropped:
        click.echo(f"note: with --target rbac, {len(dropped)} rule(s) RBAC cannot express were left out: "
                   + ", ".join(dropped), err=True)
    for target, comparison in report.mismatches:
        click.echo(f"MISMATCH ({target}) {comparison.report()}")
    click.echo(f"{report.count - len(report.mismatches)} passed, {len(report.mismatches)} failed "
               f"({', '.join(targets)}; Envoy as a {runner})")
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


def _checked_side(label: str, paths: list[str]) -> Pipeline:
    """One side of a diff, checked; its diagnostics name the side."""
    pipeline = load_and_check(_policy_paths(paths))
    _report(pipeline)
    if not pipeline.ok:
        click.echo(f"policyc: {label}: {summary_line(pipeline.diagnostics)}", err=True)
        sys.exit(EXIT_FAILED)
    return pipeline


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
        before, after = _checked_side(f"old ({old})", old_paths), _checked_side(f"new ({new})", new_paths)
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
    click.echo(f"callers without a token: {access.anonymous}")
    for ref, verdict in access.callers.items():
        click.echo(f"  {ref}: {verdict}")
