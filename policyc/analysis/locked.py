"""Locked template rules: takes a checked policy set and returns an error wherever a service
weakens a rule its template marks `locked`, each with an example request, decided exactly by the
solver and replayed through the interpreter.

A locked rule promises its decision for the requests it matches, in every service that uses the
template, whatever else the service says:
- a locked `deny` refuses every request it matches. Rules cannot weaken it (a deny wins over any
  allow), but `mode dry-run` can: the service then refuses nothing. A service that uses the
  template is weakening it when it runs in dry-run while the template does not set the mode
  itself, and some request reaches the rules that the locked deny matches.
- a locked `allow` admits every request it matches that none of the template's own deny rules
  refuses. A service weakens it with a deny rule of its own (or of another template) that
  refuses one of those requests: some request is matched by the locked allow and that deny, and
  by no deny rule of the template.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import z3

from .. import nodes as n
from ..checked import Checked
from ..diagnostics import Diagnostic, Severity, sort_diagnostics
from ..pipeline import Pipeline
from . import witness
from .findings import Analyzer
from .render import request_text
from .space import Undecided

CODE = "template/weakens-locked"


def with_locks_checked(pipeline: Pipeline) -> Pipeline:
    """The pipeline with the weakened locked rules among its diagnostics, once it checked without
    errors (a set with errors is not compiled, and its rules may not mean anything yet)."""
    if not pipeline.ok:
        return pipeline
    found = locked_diagnostics(pipeline.checked)
    return replace(pipeline, diagnostics=sort_diagnostics(pipeline.diagnostics + found)) if found else pipeline


def locked_diagnostics(checked: Checked) -> list[Diagnostic]:
    """An error wherever a service weakens a locked rule of a template it uses."""
    templates = {t.name: t for t in checked.policy_set.templates}
    found: list[Diagnostic] = []
    for service in checked.services.values():
        if any(rule.locked for rule in service.rules):
            found += _service_weakenings(checked, service, templates)
    return found


def _service_weakenings(checked: Checked, service: n.Service, templates: dict[str, n.Template]) -> Iterator[Diagnostic]:
    analyzer = Analyzer(checked, {service.name})
    for rule in service.rules:
        if not rule.locked:
            continue
        try:
            if rule.effect is n.Effect.DENY:
                yield from _dry_run(analyzer, service, rule, templates[rule.template])
            else:
                yield from _denied(analyzer, service, rule)
        except Undecided as e:
            yield _error(f"whether service `{service.name}` weakens the locked rule `{rule.name}` is undecided: "
                         f"the solver gave up ({e})", rule.instance or rule.name_span, rule,
                         "simplify the rules, so that the lock can be checked")


def _reaching(analyzer: Analyzer, service: n.Service, *facts: z3.BoolRef):
    """A request that reaches the service's rules and makes `facts` hold, or None; one without
    a client certificate when there is one, as it is simpler to read and to send."""
    reaches = z3.Not(analyzer.encoder.path_refused(service))
    return (analyzer.solve(reaches, analyzer.space.certificate == -1, *facts)
            or analyzer.solve(reaches, *facts))


def _dry_run(analyzer: Analyzer, service: n.Service, rule: n.Rule, template: n.Template) -> Iterator[Diagnostic]:
    if service.mode is not n.Mode.DRY_RUN or any(isinstance(s, n.ModeSetting) for s in template.settings):
        return
    model = _reaching(analyzer, service, analyzer.encoder.holds(rule.expr))
    if model is None:
        return
    example = _confirmed(analyzer, service, model, lambda d: witness.enforced(d) == 403 and d.status == 200)
    yield _error(f"service `{service.name}` runs in dry-run, so the locked rule `{rule.name}` refuses nothing: "
                 f"{example} passes", service.first(n.ModeSetting).span, rule,
                 "remove `mode dry-run` (of a service from the catalog: its `lifecycle: experimental`), or have the "
                 "template set the mode")


def _denied(analyzer: Analyzer, service: n.Service, rule: n.Rule) -> Iterator[Diagnostic]:
    holds = analyzer.encoder.holds
    own_denies = [r for r in service.rules if r.effect is n.Effect.DENY and r.template == rule.template]
    admitted = z3.And(holds(rule.expr), z3.Not(z3.Or([holds(r.expr) for r in own_denies])))
    for deny in service.rules:
        if deny.effect is not n.Effect.DENY or deny.template == rule.template:
            continue
        model = _reaching(analyzer, service, admitted, holds(deny.expr))
        if model is None:
            continue
        example = _confirmed(analyzer, service, model, lambda d: witness.enforced(d) == 403)
        yield _error(f"rule `{deny.name}` refuses requests the locked rule `{rule.name}` admits: {example}",
                     deny.name_span, rule, "narrow the deny so that it leaves the locked rule's requests alone")


def _confirmed(analyzer: Analyzer, service: n.Service, model, decided) -> str:
    """The example request of `model`, described, once the interpreter decides it as predicted."""
    example = witness.example(model, analyzer.space, service.hosts[0], analyzer.signer, analyzer.issuer_names,
                              analyzer.now)
    decision = witness.replay(analyzer.checked, example, analyzer.signer, analyzer.now)
    if not decided(decision):
        raise witness.AnalysisError(f"locked rule example {example.description}: the interpreter decided {decision}")
    return _describe(example.description)


def _describe(description: dict) -> str:
    return "; ".join(request_text(description))


def _error(message: str, span, rule: n.Rule, hint: str) -> Diagnostic:
    notes = [("locked here", rule.name_span)]
    if rule.instance:
        notes.append(("the template is used here", rule.instance))
    return Diagnostic(CODE, message, span, Severity.ERROR, hint, tuple(notes))
