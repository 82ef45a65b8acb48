"""Catalog services: the catalog's annotated `Component`s and `API`s → the services they ask for.

An entity annotated `policyc.dev/template: NAME` becomes a service named like the entity, that
uses template NAME. Its hosts, upstream and template arguments come from more annotations
(`policyc.dev/hosts`, `policyc.dev/upstream`, `policyc.dev/args.PARAM`), its owner from
`spec.owner` and its mode from `spec.lifecycle` (`experimental` → `mode dry-run`). So onboarding
a service is a catalog change, and deleting the entity retires the service.

Annotation values are data: each becomes a value of the tree (a host, an address, one string or
a list of strings) exactly as `use` arguments do, never policy text. A malformed one is a
`catalog/bad-annotation` at its line, and its entity makes no service. The services made here go
through the template stage and every check of a written service; each node's span points at the
annotation (or the entity field) it came from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import nodes as n
from .catalog import ANNOTATIONS, Annotation, Catalog, Entity
from .diagnostics import Diagnostic, Severity, did_you_mean
from .semantics.hosts import host_problem, upstream_problem
from .source import Span
from .templates import type_problem

TEMPLATE, HOSTS, UPSTREAM, ARGS = (f"{ANNOTATIONS}{key}" for key in ("template", "hosts", "upstream", "args."))
_KEYS = (TEMPLATE, HOSTS, UPSTREAM)
SERVICE_KINDS = frozenset({"component", "api"})
# Parameters of type `ref` the catalog fills in: the entity's `spec.owner`, and the entity itself
# (so `member owners($entity)` means its owner's members, as the catalog says them).
OWNER, ENTITY = "owner", "entity"
_HOST_SEPARATORS = re.compile(r"[,\s]+")
# A service's name is in every decision, log line and Envoy resource name: Backstage's name rules,
# lower-cased (the catalog's refs are), within the checker's for rule names.
_SERVICE_NAME = re.compile(r"[a-z0-9]([a-z0-9_.-]{0,126}[a-z0-9])?\Z")


def _error(message: str, span: Span, hint: str | None = None) -> Diagnostic:
    return Diagnostic("catalog/bad-annotation", message, span, Severity.ERROR, hint)


@dataclass
class _Entity:
    """One annotated entity's annotations by key, and what is wrong with them."""

    entity: Entity
    by_key: dict[str, Annotation]
    problems: list[Diagnostic] = field(default_factory=list)

    def value(self, key: str) -> Annotation | None:
        return self.by_key.get(key)


def generate(catalog: Catalog, templates: list[n.Template]) -> tuple[tuple[n.PolicyFile, ...], list[Diagnostic]]:
    """A service for each entity that names a template, in one `PolicyFile` per catalog file (or
    live entity); and every problem of the annotations."""
    declared: dict[str, n.Template] = {}
    for template in templates:
        declared.setdefault(template.name, template)  # a second one is `template/duplicate`
    by_path: dict[str, list[n.Service]] = {}
    problems: list[Diagnostic] = []
    for entity in catalog.entities.values():
        if not entity.annotations:
            continue
        service, found = _service(_Entity(entity, {a.key: a for a in entity.annotations}), declared)
        problems += found
        if service is not None:
            by_path.setdefault(entity.span.path, []).append(service)
    return tuple(n.PolicyFile(path, tuple(services)) for path, services in by_path.items()), problems


def _service(annotated: _Entity, templates: dict[str, n.Template]) -> tuple[n.Service | None, list[Diagnostic]]:
    entity = annotated.entity
    unknown = [a for a in entity.annotations if a.key not in _KEYS and not a.key.startswith(ARGS)]
    for annotation in unknown:
        annotated.problems.append(_error(f"unknown annotation `{annotation.key}`", annotation.key_span,
                                         hint=did_you_mean(annotation.key, _KEYS)))
    for annotation in entity.annotations:
        if annotation.value is None:
            annotated.problems.append(_error(f"`{annotation.key}` is not a string", annotation.value_span,
                                             hint="annotation values are strings: quote it"))
    named = annotated.value(TEMPLATE)
    if named is None:
        first = entity.annotations[0]
        annotated.problems.append(_error(f"`{first.key}` without `{TEMPLATE}`", first.key_span,
                                         hint=f"add `{TEMPLATE}: NAME`, the template the service uses"))
        return None, annotated.problems
    if entity.kind not in SERVICE_KINDS:
        annotated.problems.append(_error(f"a `{entity.kind}` is no service: only Components and APIs name a "
                                         "template", named.key_span))
        return None, annotated.problems
    if not _SERVICE_NAME.match(entity.name):
        annotated.problems.append(_error(f"`{entity.name}` cannot name a service", entity.span,
                                         hint="start and end it with a letter or digit (at most 128 characters)"))
    template = templates.get(named.value) if named.value is not None else None
    if template is None and named.value is not None:
        annotated.problems.append(_error(f"no template is named `{named.value}`", named.value_span,
                                         hint=did_you_mean(named.value, templates)))
    hosts, upstream = _hosts(annotated), _upstream(annotated)
    arguments = _arguments(annotated, template) if template is not None else None
    if annotated.problems or hosts is None or upstream is None or arguments is None:
        return None, annotated.problems
    use = n.Use(template.name, arguments, named.value_span, named.value_span)
    settings = (hosts, upstream, *_mode(entity, template), use)
    return n.Service(entity.name, settings, (), entity.span, entity.span), []


def _required(annotated: _Entity, key: str) -> Annotation | None:
    annotation = annotated.value(key)
    if annotation is None:
        what = "the hosts it serves, e.g. `a.internal, a.internal:8443`" if key == HOSTS else \
            "where allowed requests go, e.g. `127.0.0.1:8080` (then `http2` for gRPC)"
        annotated.problems.append(_error(f"`{annotated.entity.ref}` names a template but has no `{key}`",
                                         annotated.value(TEMPLATE).key_span, hint=f"add `{key}`: {what}"))
    return annotation if annotation is not None and annotation.value is not None else None


def _hosts(annotated: _Entity) -> n.Hosts | None:
    """`policyc.dev/hosts`: hosts separated by commas or spaces."""
    annotation = _required(annotated, HOSTS)
    if annotation is None:
        return None
    hosts = tuple(h for h in _HOST_SEPARATORS.split(annotation.value) if h)
    if not hosts:
        annotated.problems.append(_error(f"`{HOSTS}` names no host", annotation.value_span))
        return None
    for host in hosts:
        if (problem := host_problem(host)) is not None:
            annotated.problems.append(_error(f"host `{host}` {problem}", annotation.value_span))
    return n.Hosts(hosts, annotation.value_span, (annotation.value_span,) * len(hosts))


def _upstream(annotated: _Entity) -> n.Upstream | None:
    """`policyc.dev/upstream`: `host:port`, then optionally `http1` or `http2`, as in a service."""
    annotation = _required(annotated, UPSTREAM)
    if annotation is None:
        return None
    address, *rest = annotation.value.split() or [""]
    protocols = {p.value: p for p in n.UpstreamProtocol}
    if len(rest) > 1 or (rest and rest[0] not in protocols):
        annotated.problems.append(_error(f"`{annotation.value}` is no upstream", annotation.value_span,
                                         hint="write `host:port`, then optionally `http1` or `http2`"))
        return None
    if (problem := upstream_problem(address)) is not None:
        annotated.problems.append(_error(f"upstream `{address}` {problem}", annotation.value_span,
                                         hint="write it as `host:port`, e.g. `10.0.0.5:8080`"))
        return None
    protocol = protocols[rest[0]] if rest else n.UpstreamProtocol.HTTP1
    return n.Upstream(address, protocol, annotation.value_span)


def _mode(entity: Entity, template: n.Template) -> Iterator[n.ModeSetting]:
    """`mode dry-run` for an experimental entity, unless the template sets the mode itself."""
    if entity.lifecycle is not None and entity.lifecycle[0] == "experimental" and \
            not any(isinstance(s, n.ModeSetting) for s in template.settings):
        yield n.ModeSetting(n.Mode.DRY_RUN, entity.lifecycle[1])


def _arguments(annotated: _Entity, template: n.Template) -> tuple[n.Argument, ...] | None:
    """The template's arguments: `owner` and `entity` from the catalog, the others from
    `policyc.dev/args.PARAM`; None when one is missing or malformed (reported)."""
    entity, params = annotated.entity, {p.name: p for p in template.params}
    automatic = _automatic(entity, params)
    arguments = []
    for annotation in (a for a in entity.annotations if a.key.startswith(ARGS) and a.value is not None):
        name = annotation.key[len(ARGS):]
        if name in automatic:
            annotated.problems.append(_error(f"`{name}` comes from the catalog ({_SOURCES[name]}), not from an "
                                             "annotation", annotation.key_span, hint=f"remove `{annotation.key}`"))
        elif name not in params:
            annotated.problems.append(_error(f"template `{template.name}` has no parameter `{name}`",
                                             annotation.key_span, hint=did_you_mean(name, params)))
        else:
            argument = _argument(annotated, params[name], annotation)
            if argument is not None:
                arguments.append(argument)
    for name, value in automatic.items():
        if value is None:
            annotated.problems.append(_error(f"template `{template.name}` needs an owner, and `{entity.ref}` has "
                                             "no `spec.owner`", annotated.value(TEMPLATE).value_span))
        else:
            arguments.append(n.Argument(name, value[0], value[1], value[1], (value[1],)))
    # A malformed argument is reported as such, not as missing too.
    given = {a.key[len(ARGS):] for a in entity.annotations if a.key.startswith(ARGS)} | set(automatic)
    missing = [p.name for p in template.params if p.default is None and p.name not in given]
    if missing:
        needed = ", ".join(f"`{ARGS}{name}`" for name in missing)
        annotated.problems.append(_error(f"template `{template.name}` needs {needed}",
                                         annotated.value(TEMPLATE).value_span))
    return None if annotated.problems else tuple(arguments)


_SOURCES = {OWNER: "`spec.owner`", ENTITY: "the entity's own ref"}


def _automatic(entity: Entity, params: dict[str, n.TemplateParam]) -> dict[str, tuple[str, Span] | None]:
    """The arguments the catalog gives: each `ref` parameter named `owner` or `entity`, with its
    value and where it comes from (None: an owner the entity lacks)."""
    found: dict[str, tuple[str, Span] | None] = {}
    if OWNER in params and params[OWNER].type is n.ParamType.REF:
        found[OWNER] = (entity.owner, entity.owner_span) if entity.owner is not None else None
    if ENTITY in params and params[ENTITY].type is n.ParamType.REF:
        found[ENTITY] = (entity.ref, entity.span)
    return found


def _argument(annotated: _Entity, param: n.TemplateParam, annotation: Annotation) -> n.Argument | None:
    """`policyc.dev/args.PARAM`: a list parameter takes a JSON array of strings, any other the
    annotation's text as one string."""
    value: str | tuple[str, ...] = annotation.value
    if param.type is n.ParamType.LIST:
        try:
            decoded = json.loads(annotation.value)
        except ValueError:
            decoded = None
        if not isinstance(decoded, list) or not all(isinstance(item, str) for item in decoded):
            annotated.problems.append(_error(f"`{param.name}` is a list: `{annotation.key}` must be a JSON array "
                                             "of strings", annotation.value_span, hint='e.g. `["sre", "ops"]`'))
            return None
        value = tuple(decoded)
    elif (problem := type_problem(param, value)) is not None:
        annotated.problems.append(_error(problem, annotation.value_span))
        return None
    spans = (annotation.value_span,) * (len(value) if isinstance(value, tuple) else 1)
    return n.Argument(param.name, value, annotation.value_span, annotation.key_span, spans)
