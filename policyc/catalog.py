"""Catalog stage: folders of Backstage catalog-info.yaml files, or the entities a running Backstage
catalog returned (`LiveEntities`, fetched by `ops.catalog_api`) → a `Catalog` of entities.

Returns the catalog, the `Source` of every YAML file read (of every live entity, as indented JSON
named `URL#kind:namespace/name`), and diagnostics for what is wrong. Both kinds of input go through
the same checks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import yaml

from .diagnostics import Diagnostic, Severity
from .files import why, yaml_message
from .source import Source, Span

# Backstage's kind schemas accept both versions; other apiVersions are some other tool's YAML.
API_VERSIONS = frozenset({"backstage.io/v1alpha1", "backstage.io/v1beta1"})
# Compared case-sensitively, as Backstage's schemas do: `kind: user` is not a User there either.
KINDS = frozenset({"User", "Group", "Component", "API", "System", "Resource", "Domain"})
# The annotation namespace that makes a Component or an API a service (`catalog_services.generate`).
ANNOTATIONS = "policyc.dev/"

# The character set of the policy language's entity refs (a superset of Backstage's default
# name rules), so that every catalog entity can be named from a policy.
_KIND = re.compile(r"[a-z][a-z0-9_-]*\Z")
_PART = re.compile(r"[a-z0-9_.-]+\Z")
_PART_HINT = "use only letters, digits, `-`, `_` and `.`"


@dataclass(frozen=True)
class _Relation:
    """How a spec field relates entities: the `Entity` attribute that holds its refs, the kind a
    bare ref means, and the kinds it may name."""

    attribute: str
    default_kind: str
    kinds: frozenset[str]
    many: bool  # a list of refs (a lone ref is accepted too) rather than one ref


_RELATIONS = {
    "memberOf": _Relation("member_of", "group", frozenset({"group"}), many=True),
    "members": _Relation("members", "user", frozenset({"user"}), many=True),
    "parent": _Relation("parent", "group", frozenset({"group"}), many=False),
    "children": _Relation("children", "group", frozenset({"group"}), many=True),
    "owner": _Relation("owner", "group", frozenset({"group", "user"}), many=False),
}
_FIELDS_OF_KIND = {"User": ("memberOf",), "Group": ("parent", "children", "members")}
_OWNED_FIELDS = ("owner",)  # Component, API, System, Resource, Domain


def normalize_ref(
    ref: str, default_kind: str | None, default_namespace: str = "default"
) -> str | None:
    """`[kind:][namespace/]name` → lower-case `kind:namespace/name`.

    None when the ref is malformed, or has no kind and `default_kind` is None.
    """
    ref = ref.lower()
    kind, colon, rest = ref.rpartition(":")
    if not colon:
        kind = default_kind or ""
    namespace, slash, name = rest.rpartition("/")
    if not slash:
        namespace = default_namespace
    return _make_ref(kind.lower(), namespace.lower(), name)


def _make_ref(kind: str, namespace: str, name: str) -> str | None:
    # The patterns exclude ':' and '/', so a ref with extra separators leaves one in some part.
    if _KIND.match(kind) and _PART.match(namespace) and _PART.match(name):
        return f"{kind}:{namespace}/{name}"
    return None


@dataclass(frozen=True)
class LiveEntities:
    """The entities a Backstage catalog's REST API returned, as decoded JSON objects, and the
    catalog URL they came from (never holding credentials: diagnostics show it)."""

    url: str
    entities: tuple[object, ...]


@dataclass(frozen=True)
class Annotation:
    """A `metadata.annotations` entry in policyc's namespace (`policyc.dev/…`), where it is written.
    `value` is None when the YAML value is not a string (Backstage takes strings only)."""

    key: str
    value: str | None
    key_span: Span
    value_span: Span


@dataclass(frozen=True)
class Entity:
    """One catalog entity: its lower-case identity and the normalized refs its spec declares."""

    kind: str
    namespace: str
    name: str
    span: Span = field(compare=False, repr=False)  # `metadata.name` in its YAML file
    member_of: tuple[str, ...] = ()  # User.spec.memberOf
    members: tuple[str, ...] = ()  # Group.spec.members
    parent: str | None = None  # Group.spec.parent
    children: tuple[str, ...] = ()  # Group.spec.children
    owner: str | None = None  # spec.owner of Component, API, System, Resource, Domain
    owner_span: Span | None = field(default=None, compare=False, repr=False)
    # What `catalog_services.generate` makes a service of: the `policyc.dev/…` annotations, and
    # spec.lifecycle with the span of its value.
    annotations: tuple[Annotation, ...] = field(default=(), compare=False, repr=False)
    lifecycle: tuple[str, Span] | None = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.namespace}/{self.name}"


@dataclass
class Catalog:
    """Every entity by normalized ref. Queries take normalized refs; read-only once built
    (the relation indexes are computed on first use)."""

    entities: dict[str, Entity] = field(default_factory=dict)

    def has(self, ref: str) -> bool:
        return ref in self.entities

    def groups_within(self, group_ref: str) -> frozenset[str]:
        """The group and every group below it; empty when the catalog has no such group."""
        if group_ref not in self._child_groups:
            return frozenset()
        found, todo = {group_ref}, [group_ref]
        while todo:  # a visited set, not recursion: cycles and deep trees both terminate
            for child in self._child_groups[todo.pop()] - found:
                found.add(child)
                todo.append(child)
        return frozenset(found)

    def users_in(self, group_ref: str) -> frozenset[str]:
        """The users who are members of the group or of any group below it."""
        users: set[str] = set()
        for group in self.groups_within(group_ref):
            users |= self._direct_users[group]
        return frozenset(users)

    def owner_of(self, entity_ref: str) -> str | None:
        """The owner (a group or a user ref) of an owned entity; the owner may be missing."""
        entity = self.entities.get(entity_ref)
        return entity.owner if entity else None

    @cached_property
    def _child_groups(self) -> dict[str, set[str]]:
        # Either side may declare the edge: Group.children on the parent, Group.parent on the child.
        children: dict[str, set[str]] = {e.ref: set() for e in self._groups}
        for group in self._groups:
            children[group.ref].update(c for c in group.children if c in children)
            if group.parent in children:
                children[group.parent].add(group.ref)
        return children

    @cached_property
    def _direct_users(self) -> dict[str, set[str]]:
        # Either side may declare membership: User.memberOf and Group.members.
        users: dict[str, set[str]] = {e.ref: set() for e in self._groups}
        for group in self._groups:
            users[group.ref].update(u for u in group.members if self._is_user(u))
        for user in (e for e in self.entities.values() if e.kind == "user"):
            for group in user.member_of:
                if group in users:
                    users[group].add(user.ref)
        return users

    @property
    def _groups(self) -> list[Entity]:
        return [e for e in self.entities.values() if e.kind == "group"]

    def _is_user(self, ref: str) -> bool:
        entity = self.entities.get(ref)
        return entity is not None and entity.kind == "user"


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Ref:
    """A relation ref as written, kept for the checks that need the whole catalog."""

    source: str  # the declaring entity's ref
    field: str
    target: str
    span: Span


def _span(path: str, node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    return Span(path, start.line + 1, start.column + 1, end.line + 1, end.column + 1)


def _is_null(node: yaml.Node | None) -> bool:
    """An absent value, or an empty or `~`/`null` one."""
    return node is None or (
        isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null")


def _text(node: yaml.Node | None) -> str | None:
    """A scalar's text, whatever type YAML 1.1 would resolve it to; None for null or non-scalars."""
    if isinstance(node, yaml.ScalarNode) and not _is_null(node):
        return node.value
    return None


def _is_string(node: yaml.Node) -> bool:
    """A scalar YAML reads as a string (`5`, `true` and `~` are not: Backstage refuses them as
    annotation values)."""
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str"


def _entries(node: yaml.Node | None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """A mapping's scalar keys → (key node, value node), the first of repeated keys."""
    entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                entries.setdefault(key.value, (key, value))
    return entries


def _value(entries: dict[str, tuple[yaml.Node, yaml.Node]], key: str) -> yaml.Node | None:
    return entries[key][1] if key in entries else None


def yaml_files(folder: str, on_error: Callable[[OSError], None]) -> list[str]:
    """The YAML files under `folder`, sorted; a symlink only when its target stays inside it."""
    root = os.path.realpath(folder)
    found = []
    # followlinks=False: a symlinked folder is never entered, whether it points inside or out.
    for dirpath, _, filenames in os.walk(folder, onerror=on_error):
        for name in filenames:
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            inside = os.path.commonpath([root, real]) == root
            # Regular files only: reading a fifo would hang.
            if name.lower().endswith((".yaml", ".yml")) and inside and os.path.isfile(real):
                found.append(path)
    return sorted(found)


def _foreign(path: str) -> bool:
    """Whether a catalog file is really something else: a `.yaml` symlink to a file named otherwise."""
    return not os.path.realpath(path).lower().endswith((".yaml", ".yml"))


def _yaml_error_span(source: Source, error: yaml.YAMLError) -> Span:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return Span(source.path, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2)
    if isinstance(error, yaml.reader.ReaderError):
        return source.span_at_offset(error.position)
    return source.whole_file()


def _cycles(edges: dict[str, dict[str, Span]]) -> Iterator[list[str]]:
    """Each cycle a depth-first search meets, as [first, …, last, first]; iterative, so deep
    hierarchies cannot exhaust the stack."""
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    for start in sorted(edges):
        if start in state:
            continue
        path, pending = [start], [iter(sorted(edges[start]))]
        state[start] = "open"
        while pending:
            child = next(pending[-1], None)
            if child is None:
                state[path.pop()] = "done"
                pending.pop()
            elif state.get(child) == "open":
                yield path[path.index(child):] + [child]
            elif child not in state:
                state[child] = "open"
                path.append(child)
                pending.append(iter(sorted(edges.get(child, {}))))


class _Loader:
    def __init__(self) -> None:
        self.catalog = Catalog()
        self.sources: dict[str, Source] = {}
        self.diagnostics: list[Diagnostic] = []
        self.refs: list[_Ref] = []
        self.read_files: set[str] = set()  # real paths: overlapping folders and symlinks read once

    def error(self, code: str, message: str, span: Span, **extra) -> None:
        self.diagnostics.append(Diagnostic(code, message, span, **extra))

    # -- files

    def folder(self, folder: str, span: Span) -> None:
        if not os.path.isdir(folder):
            self.error("check/missing-catalog", f"catalog folder `{folder}` does not exist", span)
            return

        def unreadable(error: OSError) -> None:
            # A skipped sub-folder could hold memberships, so it is an error, not silence.
            self.unreadable(error.filename, error, span)

        for path in yaml_files(folder, unreadable):
            self.file(path, span)

    def file(self, path: str, folder_span: Span) -> None:
        real = os.path.realpath(path)
        if real in self.read_files:
            return
        self.read_files.add(real)
        source = self.read(path, folder_span)
        if source is None:
            return
        try:
            # Documents before a syntax error still count, so one typo does not cascade into
            # dangling-ref errors for every entity the file declared before it.
            for document in yaml.compose_all(source.text, Loader=yaml.SafeLoader):
                self.document(source, document)
        except yaml.YAMLError as error:
            span = _yaml_error_span(source, error)
            self.error("catalog/bad-yaml", yaml_message(error), span)
        except RecursionError:  # PyYAML composes nested collections recursively
            self.error("catalog/bad-yaml", "collections nested too deeply", source.whole_file())

    def unreadable(self, path: str, error: OSError, folder_span: Span) -> None:
        self.error("catalog/unreadable-file", f"cannot read `{path}`: {why(error)}", folder_span)

    def read(self, path: str, folder_span: Span) -> Source | None:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            self.unreadable(path, error, folder_span)
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            # Kept, decoded leniently, so the diagnostic can show the offending line.
            source = self.sources[path] = Source(path, data.decode("utf-8", "replace"), _foreign(path))
            offset = len(data[:error.start].decode("utf-8", "replace"))
            span = source.span_at_offset(offset)
            self.error("catalog/bad-yaml", f"`{path}` is not UTF-8 text", span)
            return None
        source = self.sources[path] = Source(path, text.removeprefix("\ufeff"), _foreign(path))
        return source

    # -- live entities

    def live(self, live: LiveEntities) -> None:
        """Each entity through the checks a file's document gets: written out as indented JSON,
        which YAML reads as the same document, so that diagnostics point into it."""
        for index, entity in enumerate(live.entities):
            text = json.dumps(entity, indent=2)
            label = f"{live.url}#{_live_label(entity, index)}"
            if label in self.sources:  # the same ref twice: the second is reported as a duplicate
                label = f"{label}@{index + 1}"
            source = self.sources[label] = Source(label, text, live=True)
            try:
                node = yaml.compose(text, Loader=yaml.SafeLoader)
            except RecursionError:
                self.error("catalog/bad-entity", "collections nested too deeply", source.whole_file())
                continue
            if not isinstance(node, yaml.MappingNode):
                self.error("catalog/bad-entity", "an entity that is not a JSON object", source.whole_file())
                continue
            self.document(source, node)

    # -- entities

    def document(self, source: Source, node: yaml.Node | None) -> None:
        top = _entries(node)
        kind_node = _value(top, "kind")
        kind = _text(kind_node)
        if kind not in KINDS or not self.backstage_version(source, kind, kind_node, _value(top, "apiVersion")):
            return  # Locations, Templates, other tools' YAML: not ours to judge
        metadata, spec = _value(top, "metadata"), _value(top, "spec")
        for mapping in (node, metadata, spec):
            self.check_unique_keys(source, mapping)
        if not _is_null(spec) and not isinstance(spec, yaml.MappingNode):
            self.error("catalog/bad-entity", "`spec` is not a mapping", _span(source.path, spec))
        entity = self.identity(source, kind, kind_node, _entries(metadata))
        if entity is None:
            return
        if entity.ref in self.catalog.entities:
            first = self.catalog.entities[entity.ref].span
            self.error("catalog/duplicate-entity", f"entity `{entity.ref}` is declared twice",
                       entity.span, notes=(("first declared", first),),
                       hint="entity refs ignore case; only the first declaration is used")
            return
        relations = {}
        for name in _FIELDS_OF_KIND.get(kind, _OWNED_FIELDS):
            relation = _RELATIONS[name]
            refs = self.relation(source, entity, name, _value(_entries(spec), name))
            relations[relation.attribute] = refs if relation.many else next(iter(refs), None)
        spec_entries = _entries(spec)
        owner_node, lifecycle_node = _value(spec_entries, "owner"), _value(spec_entries, "lifecycle")
        if relations.get("owner") is not None:
            relations["owner_span"] = _span(source.path, owner_node)
        if _text(lifecycle_node) is not None:
            relations["lifecycle"] = (_text(lifecycle_node), _span(source.path, lifecycle_node))
        annotations = self.annotations(source, _value(_entries(metadata), "annotations"))
        self.catalog.entities[entity.ref] = replace(entity, annotations=annotations, **relations)

    def annotations(self, source: Source, node: yaml.Node | None) -> tuple[Annotation, ...]:
        """The entity's annotations in policyc's namespace (others are other tools' to judge)."""
        if not isinstance(node, yaml.MappingNode):
            return ()
        self.check_unique_keys(source, node)
        return tuple(Annotation(key, value.value if _is_string(value) else None,
                                _span(source.path, key_node), _span(source.path, value))
                     for key, (key_node, value) in _entries(node).items() if key.startswith(ANNOTATIONS))

    def backstage_version(self, source: Source, kind: str, kind_node: yaml.Node, node: yaml.Node | None) -> bool:
        """Whether a `kind` entity's apiVersion is one of Backstage's. Another tool's is not ours to
        judge, but none at all, or a `backstage.io/` one Backstage does not accept, is a mistake
        (reported): Backstage refuses the entity, and left out silently it would only show up as
        missing from the catalog."""
        version = _text(node)
        if version in API_VERSIONS:
            return True
        accepted = " or ".join(f"`{v}`" for v in sorted(API_VERSIONS))
        if version is None:
            self.error("catalog/bad-entity", f"`{kind}` entity without `apiVersion`", _span(source.path, kind_node),
                       hint=f"add `apiVersion: backstage.io/v1alpha1` (Backstage accepts {accepted})")
        elif version.startswith("backstage.io/"):
            self.error("catalog/bad-entity", f"`{kind}` entity with `apiVersion: {version}`, which Backstage does "
                       "not accept", _span(source.path, node), hint=f"write {accepted}")
        return False

    def check_unique_keys(self, source: Source, node: yaml.Node | None) -> None:
        # Backstage's YAML parser rejects repeated keys; PyYAML would silently keep the last.
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict[str, yaml.Node] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value in seen:
                first = _span(source.path, seen[key.value])
                self.error("catalog/bad-yaml", f"key `{key.value}` repeated",
                           _span(source.path, key), notes=(("first given", first),))
            elif isinstance(key, yaml.ScalarNode):
                seen[key.value] = key

    def identity(self, source: Source, kind: str, kind_node: yaml.Node, metadata) -> Entity | None:
        """The entity without its relations, or None (reported) when its name is malformed."""
        name_node, namespace_node = _value(metadata, "name"), _value(metadata, "namespace")
        name = _text(name_node)
        namespace = "default" if _is_null(namespace_node) else _text(namespace_node)
        if name is None:
            self.error("catalog/bad-entity", f"`{kind}` entity without `metadata.name`",
                       _span(source.path, kind_node))
            return None
        if namespace is None or not _PART.match(namespace.lower()):
            self.error("catalog/bad-entity", "`metadata.namespace` is not a valid namespace",
                       _span(source.path, namespace_node), hint=_PART_HINT)
            return None
        if not _PART.match(name.lower()):
            self.error("catalog/bad-entity", f"`metadata.name` `{name}` is not a valid name",
                       _span(source.path, name_node), hint=_PART_HINT)
            return None
        return Entity(kind.lower(), namespace.lower(), name.lower(), _span(source.path, name_node))

    def relation(
        self, source: Source, entity: Entity, name: str, node: yaml.Node | None
    ) -> tuple[str, ...]:
        """The normalized refs of one relation field; malformed entries are reported and dropped."""
        if _is_null(node):
            return ()
        many = _RELATIONS[name].many
        if isinstance(node, yaml.SequenceNode) and many:
            items = node.value
        elif isinstance(node, yaml.ScalarNode):
            items = [node]
        else:
            shape = "a list of entity refs" if many else "one entity ref"
            self.error("catalog/bad-entity", f"`{name}` must be {shape}", _span(source.path, node))
            return ()
        targets = (self.target(source, entity, name, item) for item in items)
        return tuple(dict.fromkeys(t for t in targets if t is not None))

    def target(self, source: Source, entity: Entity, name: str, item: yaml.Node) -> str | None:
        relation, span, text = _RELATIONS[name], _span(source.path, item), _text(item)
        # Backstage resolves a ref without a namespace in the namespace of the entity that
        # writes it (BuiltinKindsEntityProcessor passes `defaultNamespace: selfRef.namespace`),
        # not in `default`.
        target = (None if text is None
                  else normalize_ref(text, relation.default_kind, entity.namespace))
        if target is None:
            shown = "a non-string value" if text is None else f"`{text}`"
            self.error("catalog/bad-entity", f"`{name}` holds {shown}, which is not an entity ref",
                       span, hint="write `[kind:][namespace/]name`, e.g. `group:default/sre`")
            return None
        if target.partition(":")[0] not in relation.kinds:
            kinds = " or ".join(f"{k}s" for k in sorted(relation.kinds))
            self.error("catalog/bad-entity", f"`{name}` must name {kinds}, not `{target}`", span)
            return None
        self.refs.append(_Ref(entity.ref, name, target, span))
        return target

    # -- whole-catalog checks

    def check_dangling(self) -> None:
        entities = self.catalog.entities
        for ref in self.refs:
            if ref.target in entities:
                continue
            # A missing group or member is an error: `member` conditions can be negated
            # (`not member …`), so a membership the catalog silently lacks can grant access as
            # well as deny it, and a dangling ref usually means a typo, a wrong default namespace or
            # a catalog folder left out. An owner only matters to the policies that name its
            # entity, so the checker reports it there and the catalog only warns.
            severity = Severity.WARNING if ref.field == "owner" else Severity.ERROR
            self.error("catalog/dangling-ref",
                       f"`{ref.field}` of `{ref.source}` names `{ref.target}`, "
                       "which the catalog does not contain",
                       ref.span, severity=severity, hint=self.dangling_hint(ref.target))

    def dangling_hint(self, target: str) -> str | None:
        kind, _, rest = target.partition(":")
        in_default = f"{kind}:default/{rest.partition('/')[2]}"
        if in_default != target and in_default in self.catalog.entities:
            return (f"did you mean `{in_default}`? A ref without a namespace takes the namespace "
                    f"of the entity that writes it")
        return None

    def check_cycles(self) -> None:
        edges: dict[str, dict[str, Span]] = {}  # parent → child → where the edge is declared
        for ref in self.refs:
            # Only groups declare these fields and `target` checked they name groups.
            if ref.field in ("parent", "children") and ref.target in self.catalog.entities:
                parent, child = ref.target, ref.source
                if ref.field == "children":
                    parent, child = child, parent
                edges.setdefault(parent, {}).setdefault(child, ref.span)
        for cycle in _cycles(edges):
            *others, (last_parent, last_child) = zip(cycle, cycle[1:], strict=False)
            path = " → ".join(f"`{g}`" for g in cycle)
            self.error("catalog/group-cycle", f"groups form a parent/children cycle: {path}",
                       edges[last_parent][last_child],
                       notes=tuple((f"`{c}` is a child of `{p}`", edges[p][c]) for p, c in others),
                       hint="a group hierarchy is a tree: remove one `parent` or `children` entry")


def _live_label(entity: object, index: int) -> str:
    """How diagnostics name a live entity: its ref as the JSON gives it, else its place."""
    top = entity if isinstance(entity, dict) else {}
    metadata = top.get("metadata") if isinstance(top.get("metadata"), dict) else {}
    kind, namespace, name = top.get("kind"), metadata.get("namespace", "default"), metadata.get("name")
    parts = (kind, namespace, name)
    if all(isinstance(part, str) and _PART.match(part.lower()) for part in parts):
        return f"{kind.lower()}:{namespace.lower()}/{name.lower()}"
    return f"entity-{index + 1}"


def load_catalog(
    folders: list[tuple[str, Span]], live: LiveEntities | None = None,
) -> tuple[Catalog, dict[str, Source], list[Diagnostic]]:
    """Read the Backstage entities under each folder (paired with the span of the `catalog`
    statement that named it), and those of `live`. Never raises for bad input: every problem is
    a diagnostic."""
    loader = _Loader()
    for folder, span in folders:
        loader.folder(folder, span)
    if live is not None:
        loader.live(live)
    loader.check_dangling()
    loader.check_cycles()
    return loader.catalog, loader.sources, loader.diagnostics
