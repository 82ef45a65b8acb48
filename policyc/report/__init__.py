"""`policyc report`: takes checked policies (and, with `--diff`, an older version of them) and
returns one self-contained HTML page: per service the access matrix (`analysis/matrix.py`), the
rules with their source text, the diagnostics of `check`, the findings of `analyze`, what
changed since the older version, and (with `--usage`) what a window of access logs never used:
beside each matrix the service's rules that decided nothing and its callers' unused access.

Every policy string reaches the page through Jinja2 with autoescaping; the page's script reads
only the page's own markup, so no policy text is ever placed inside script or style.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from .. import nodes as n
from ..analysis import analyze, diff
from ..analysis.diff import Diff, ServiceDiff
from ..analysis.findings import Finding
from ..analysis.matrix import ALWAYS, NEVER, SOMETIMES, UNDECIDED, Cell, ServiceMatrix, access_matrix
from ..analysis.render import caller_text, decision_text, request_text
from ..diagnostics import render_text
from ..pipeline import Pipeline

VERDICT_TEXT = {ALWAYS: "allowed", SOMETIMES: "sometimes", NEVER: "denied", UNDECIDED: "undecided"}
VERDICT_MARK = {ALWAYS: "✔", SOMETIMES: "◐", NEVER: "✘", UNDECIDED: "?"}


@dataclass
class RuleEntry:
    """One rule in the rule list: where it is written and what it says."""

    anchor: str
    service: str
    name: str
    effect: str
    public: bool
    file: str
    line: int
    text: str
    change: str | None = None  # "added" or "edited" since the older version


@dataclass
class CellView:
    verdict: str
    text: str
    mark: str
    rules: list[RuleEntry]
    default_deny: bool
    examples: str


@dataclass
class ServiceView:
    name: str
    hosts: tuple[str, ...]
    dry_run: bool
    columns: list[dict]
    rows: list[dict]
    rules: list[RuleEntry]


def _rule_entries(pipeline: Pipeline, index: int, service: n.Service, changed: ServiceDiff | None) -> list[RuleEntry]:
    entries = []
    for position, rule in enumerate(service.rules):
        span = rule.span
        source = pipeline.sources.get(span.path)
        text = "\n".join(source.line_text(line) for line in range(span.line, span.end_line + 1)) if source else ""
        change = None
        if changed:
            change = "added" if rule.name in changed.added else "edited" if rule.name in changed.edited else None
        entries.append(RuleEntry(f"rule-{index}-{position}", service.name, rule.name, rule.effect.value, rule.public,
                                 span.path, span.line, text, change))
    return entries


def _example_text(cell: Cell) -> str:
    parts = []
    for what, found in (("allowed", cell.allowed), ("denied", cell.denied)):
        if found:
            parts.append(f"{what}, e.g. (status {found.status}): " + "; ".join(request_text(found.example.description)))
    return "\n".join(parts)


def _cell_view(cell: Cell, rules: dict[str, RuleEntry]) -> CellView:
    """The cell's deciding rules: those its examples name; for a `never` cell, which has no
    example, the default deny and the deny rules its row and column do not rule out."""
    if cell.verdict == NEVER:
        names, default = cell.denies, True
    else:
        names = list(dict.fromkeys(r for r in cell.rules if r))
        default = None in cell.rules
    return CellView(cell.verdict, VERDICT_TEXT[cell.verdict], VERDICT_MARK[cell.verdict], [rules[r] for r in names],
                    default, _example_text(cell))


def _service_view(pipeline: Pipeline, index: int, matrix: ServiceMatrix, changed: ServiceDiff | None) -> ServiceView:
    service = matrix.service
    entries = _rule_entries(pipeline, index, service, changed)
    by_name = {e.name: e for e in entries}
    columns = [{"label": c.label, "path": c.path} for c in matrix.columns]
    rows = [{"kind": row.kind, "label": row.label,
             "cells": [_cell_view(matrix.cells[r, c], by_name) for c in range(len(matrix.columns))]}
            for r, row in enumerate(matrix.rows)]
    return ServiceView(service.name, service.hosts, service.mode is n.Mode.DRY_RUN, columns, rows, entries)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("policyc.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _usage_by_service(usage: dict | None) -> dict[str, dict]:
    """Per service, from `ops.usage.Usage.to_json()`: its unused allow and deny rules, and each
    caller's access to it that went unused."""
    if usage is None:
        return {}
    found: dict[str, dict] = {}

    def of(service: str) -> dict:
        return found.setdefault(service, {"allow": [], "deny": [], "idle": {}})
    for effect in ("allow", "deny"):
        for rule in usage[f"unused_{effect}_rules"]:
            of(rule["service"])[effect].append(rule["rule"])
    for held in usage["idle_access"]:
        for rule in held["rules"]:
            of(rule["service"])["idle"].setdefault(held["caller"], []).append(rule["rule"])
    return found


def render(pipeline: Pipeline, inputs: list[str], matrices: list[ServiceMatrix], findings: list[Finding] | None,
           changes: Diff | None = None, old_inputs: list[str] | None = None, usage: dict | None = None) -> str:
    changed = {s.new_service: s for s in changes.services} if changes else {}
    services = [_service_view(pipeline, i, m, changed.get(m.service.name)) for i, m in enumerate(matrices)]
    diagnostics = [{"severity": d.severity.value, "file": d.span.path, "line": d.span.line,
                    "text": render_text(d, pipeline.sources)} for d in pipeline.diagnostics]
    rules = {(e.service, e.name): e for s in services for e in s.rules}
    return _environment().get_template("report.html.j2").render(
        inputs=inputs, old_inputs=old_inputs, services=services, diagnostics=diagnostics, findings=findings,
        rules=rules, changes=changes, decision_text=decision_text, request_text=request_text,
        caller_text=caller_text,
        verdicts=VERDICT_TEXT, usage=usage, service_usage=_usage_by_service(usage))


def build(pipeline: Pipeline, inputs: list[str], old: Pipeline | None = None,
          old_inputs: list[str] | None = None, findings: bool = True, usage: dict | None = None) -> str:
    """The page for checked `pipeline`; with `old`, also what changed since it; without
    `findings`, no findings of `analyze` (whose questions grow with the square of the rules);
    with `usage` (`ops.usage.Usage.to_json()`), what a window of access logs used of it."""
    checked = pipeline.checked
    changes = diff(old.checked, checked) if old else None
    return render(pipeline, inputs, access_matrix(checked), analyze(checked) if findings else None, changes,
                  old_inputs, usage)

