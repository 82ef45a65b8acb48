"""Template stage: a parsed `PolicySet` → the same set with every `use` written out, and the
diagnostics of every template and every use.

A `template` is a named, parameterized set of service settings and rules. `use name(arg = …)`
in a service puts the template's settings and rules into the service, each rule renamed
`template/rule` (and knowing its `template` and the `use` that made it), with the arguments in
place of the `$parameters`. The substitution is of values in the tree, never of text: an
argument is one string, one ref or a list of strings wherever it lands, and cannot become syntax.
Everything after this stage — the checker, the interpreter, every backend and the analysis —
sees ordinary services, so a template means exactly what its rules written out would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from . import nodes as n
from .catalog import normalize_ref
from .diagnostics import Diagnostic, Severity, did_you_mean
from .source import Span
from .syntax.printer import string

T = n.ParamType
# Where a parameter may stand: the type its place needs → the types that fit there.
_FITS = {T.STRING: {T.STRING, T.PATH, T.REF}, T.PATH: {T.PATH}, T.REF: {T.REF}, T.LIST: {T.LIST}}
_PLACES = {T.STRING: "a string", T.PATH: "a path", T.REF: "a catalog ref", T.LIST: "a list"}


def _error(code: str, message: str, span: Span, hint: str | None = None, notes=()) -> Diagnostic:
    return Diagnostic(code, message, span, Severity.ERROR, hint, tuple(notes))


def _warning(code: str, message: str, span: Span, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, message, span, Severity.WARNING, hint)


# ---------------------------------------------------------------- parameters in conditions


def _place(node: n.Expr) -> T:
    """The type a parameter needs where it stands in `node`."""
    match node:
        case n.Member(n.Param(listed=False)) | n.MemberOwners():
            return T.REF
        case n.Member() | n.SourceIn():
            return T.LIST
        case n.PathTest(op=op) | n.HeaderTest(op=op) | n.ClaimTest(op=op) | n.PeerTest(op=op) if op is n.Op.IN:
            return T.LIST
        case n.PathTest():
            return T.PATH
    return T.STRING


def parameters(expr: n.Expr) -> Iterator[tuple[n.Param, T]]:
    """Every `$parameter` of a condition, with the type its place needs."""
    for node in n.walk(expr):
        for param in n.params_of(node):
            yield param, _place(node)


@dataclass(frozen=True)
class _Bound:
    """An argument's value, and the spans of its strings (where diagnostics about them point)."""

    value: str | tuple[str, ...]
    spans: tuple[Span, ...]  # none for a tree built by code rather than parsed

    def span(self, index: int = 0) -> Span | None:
        return self.spans[index] if index < len(self.spans) else None


def _substitute(expr: n.Expr, bound: dict[str, _Bound]) -> n.Expr:
    """`expr` with each parameter replaced by its argument's value (a new tree; spans of the
    substituted values are the argument's)."""
    match expr:
        case n.And(operands) | n.Or(operands):
            return replace(expr, operands=tuple(_substitute(o, bound) for o in operands))
        case n.Not(operand):
            return replace(expr, operand=_substitute(operand, bound))
        case n.Member(n.Param(name, listed=True)):
            members = tuple(n.Member(group, bound[name].span(i)) for i, group in enumerate(bound[name].value))
            return members[0] if len(members) == 1 else n.Or(members, expr.span)
        case n.Member(n.Param(name)):
            return n.Member(bound[name].value, bound[name].span())
        case n.MemberOwners(n.Param(name)):
            return n.MemberOwners(bound[name].value, bound[name].span())
        case n.SourceIn((n.Param(name),)):
            return replace(expr, cidrs=bound[name].value, value_spans=bound[name].spans)
    params = n.params_of(expr)
    if not params:
        return expr
    if params[0].listed:
        return replace(expr, values=bound[params[0].name].value, value_spans=bound[params[0].name].spans)
    value = bound[params[0].name]
    return replace(expr, values=(value.value,), value_spans=value.spans[:1])


# ---------------------------------------------------------------- templates


def type_problem(param: n.TemplateParam, value: str | tuple[str, ...]) -> str | None:
    """Why `value` is no value of `param`'s type, if it is not."""
    kind, name = param.type, param.name
    if kind is T.LIST:
        return None if isinstance(value, tuple) else f"`{name}` is a list: write [{string(value)}]"
    if isinstance(value, tuple):
        return f"`{name}` is {_PLACES[kind]}, not a list"
    if kind is T.PATH and not value.startswith("/"):
        return f"`{name}` is a path: `{value}` does not start with `/`"
    if kind is T.REF and normalize_ref(value, "group") is None:
        return f"`{name}` is a catalog ref: `{value}` is none; write `[kind:][namespace/]name`"
    return None


def _check_argument(param: n.TemplateParam, argument: n.Argument) -> Diagnostic | None:
    problem = type_problem(param, argument.value)
    if problem is None:
        return None
    span = argument.value_spans[0] if isinstance(argument.value, str) and argument.value_spans else argument.span
    return _error("template/bad-argument", problem, span, notes=[("the parameter is declared here", param.name_span)])


def _check_template(template: n.Template) -> Iterator[Diagnostic]:
    """The template's own mistakes: parameters declared twice, unknown, ill-placed or unused,
    and defaults of the wrong type."""
    declared: dict[str, n.TemplateParam] = {}
    for param in template.params:
        if param.name in declared:
            yield _error("template/duplicate-parameter", f"template `{template.name}` declares `{param.name}` twice",
                         param.name_span, notes=[("first declared here", declared[param.name].name_span)])
            continue
        declared[param.name] = param
        if param.default is not None and (problem := _check_argument(param, param.default)) is not None:
            yield problem
    used = set()
    for rule in template.rules:
        for param, place in parameters(rule.expr):
            used.add(param.name)
            known = declared.get(param.name)
            if known is None:
                yield _error("template/unknown-parameter", f"template `{template.name}` has no parameter "
                             f"`{param.name}`", param.span, hint=did_you_mean(param.name, declared))
            elif known.type not in _FITS[place]:
                yield _error("template/parameter-type", f"`${param.name}` is {_PLACES[known.type]}, but "
                             f"{_PLACES[place]} stands here", param.span,
                             notes=[("the parameter is declared here", known.name_span)])
    for name, param in declared.items():
        if name not in used:
            yield _warning("template/unused-parameter", f"template `{template.name}` never uses `{name}`",
                           param.name_span, hint="remove it, or use it as `$" + name + "` in a rule")


# ---------------------------------------------------------------- uses


def _bind(use: n.Use, template: n.Template) -> tuple[dict[str, _Bound] | None, list[Diagnostic]]:
    """Each parameter's value in this use (the argument, else the default), or None with the
    diagnostics of the arguments: unknown, given twice, missing, or of the wrong type."""
    params = {p.name: p for p in template.params}
    given: dict[str, n.Argument] = {}
    problems = []
    for argument in use.arguments:
        if argument.name in given:
            problems.append(_error("template/duplicate-argument", f"`{argument.name}` is given twice",
                                   argument.name_span, notes=[("first given here", given[argument.name].name_span)]))
        elif argument.name not in params:
            problems.append(_error("template/unknown-argument", f"template `{template.name}` has no parameter "
                                   f"`{argument.name}`", argument.name_span, hint=did_you_mean(argument.name, params)))
        else:
            given[argument.name] = argument
            if (problem := _check_argument(params[argument.name], argument)) is not None:
                problems.append(problem)
    missing = [p for p in params.values() if p.name not in given and p.default is None]
    if missing:
        names = ", ".join(f"`{p.name}`" for p in missing)
        problems.append(_error("template/missing-argument", f"`use {template.name}` needs {names}", use.name_span,
                               hint=f"write `{missing[0].name} = …` in the parentheses",
                               notes=[("the template is declared here", template.name_span)]))
    if problems:
        return None, problems
    bound = {name: _Bound(a.value, a.value_spans) for name, a in given.items()}
    for param in params.values():
        if param.name not in bound:
            bound[param.name] = _Bound(param.default.value, param.default.value_spans)
    # `member in $p` is an `or` of one `member` per group: of none, it would be no test at all.
    empty = [_error("template/bad-argument", f"`member in ${name}` never matches an empty list", given[name].span
                    if name in given else use.name_span, hint="list at least one group")
             for name in sorted(_member_lists(template)) if bound[name].value == ()]
    return (None, empty) if empty else (bound, [])


def _member_lists(template: n.Template) -> set[str]:
    """The parameters a template's rules use as `member in $p`."""
    return {param.name for rule in template.rules for node in n.walk(rule.expr) if isinstance(node, n.Member)
            for param in n.params_of(node) if param.listed}


def _instantiate(use: n.Use, template: n.Template, bound: dict[str, _Bound]) -> tuple[n.Rule, ...]:
    return tuple(replace(rule, name=f"{template.name}/{rule.name}", expr=_substitute(rule.expr, bound),
                         template=template.name, instance=use.span) for rule in template.rules)


def _expand_service(service: n.Service, templates: dict[str, n.Template], broken: set[str],
                    used: set[str]) -> tuple[n.Service, list[Diagnostic]]:
    uses = [s for s in service.settings if isinstance(s, n.Use)]
    if not uses:
        return service, []
    # The templates' settings first: a service that sets one again gets the duplicate at its own.
    settings: list[n.ServiceSetting] = []
    rules: list[n.Rule] = []
    problems: list[Diagnostic] = []
    first: dict[str, n.Use] = {}
    for use in uses:
        template = templates.get(use.template)
        if template is None:
            problems.append(_error("template/unknown", f"no template is named `{use.template}`", use.name_span,
                                   hint=did_you_mean(use.template, templates)))
            continue
        used.add(template.name)
        if template.name in first:
            problems.append(_error("template/used-twice", f"service `{service.name}` uses `{template.name}` twice",
                                   use.name_span, notes=[("first used here", first[template.name].name_span)]))
            continue
        first[template.name] = use
        if template.name in broken:
            continue
        bound, found = _bind(use, template)
        problems += found
        if bound is not None:
            settings += template.settings
            rules += _instantiate(use, template, bound)
    own = tuple(s for s in service.settings if not isinstance(s, n.Use))
    return replace(service, settings=(*settings, *own), rules=(*rules, *service.rules)), problems


def expand(policy_set: n.PolicySet) -> tuple[n.PolicySet, list[Diagnostic]]:
    """The set with every service's `use`s written out, and every diagnostic of templates and
    uses. A set without templates comes back as it was."""
    templates: dict[str, n.Template] = {}
    broken: set[str] = set()  # templates with errors of their own: their uses are not written out
    diagnostics: list[Diagnostic] = []
    for template in policy_set.templates:
        if template.name in templates:
            diagnostics.append(_error("template/duplicate", f"template `{template.name}` is declared twice",
                                      template.name_span, notes=[("first declared here",
                                                                  templates[template.name].name_span)]))
            continue
        templates[template.name] = template
        found = list(_check_template(template))
        diagnostics += found
        if any(d.is_error for d in found):
            broken.add(template.name)
    if not templates and not any(isinstance(s, n.Use) for svc in policy_set.services for s in svc.settings):
        return policy_set, diagnostics
    used: set[str] = set()
    files = []
    for file in policy_set.files:
        items = []
        for item in file.items:
            if isinstance(item, n.Service):
                item, found = _expand_service(item, templates, broken, used)
                diagnostics += found
            items.append(item)
        files.append(replace(file, items=tuple(items)))
    for name, template in templates.items():
        if name not in used:
            diagnostics.append(_warning("template/unused", f"no service uses template `{name}`",
                                        template.name_span, hint=f"add `use {name}(…)` to a service, or remove it"))
    return n.PolicySet(tuple(files)), diagnostics
