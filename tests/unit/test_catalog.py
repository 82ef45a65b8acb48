"""policyc.catalog: ref normalization, membership and ownership, and the catalog diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest

from policyc.catalog import Catalog, Entity, load_catalog, normalize_ref
from policyc.diagnostics import CODES, Severity, render_text
from policyc.source import Span

FIXTURES = Path(__file__).parent / "catalog_fixtures"
STATEMENT = Span("main.policy", 3, 1, 3, 20)  # the `catalog "dir"` statement naming a folder

USER = """\
apiVersion: backstage.io/v1alpha1
kind: User
metadata:
  name: {name}
spec:
  memberOf: []
"""


def load(*folders: str | Path):
    return load_catalog([(str(folder), STATEMENT) for folder in folders])


def load_fixture(name: str):
    return load(FIXTURES / name)


def located(diagnostics) -> list[tuple[str, str, int, int]]:
    """(code, file name, line, column) of each diagnostic, in location order."""
    found = [(d.code, Path(d.span.path).name, d.span.line, d.span.column) for d in diagnostics]
    return sorted(found, key=lambda f: (f[1], f[2], f[3]))


# ---------------------------------------------------------------- normalize_ref


@pytest.mark.parametrize(("ref", "default_kind", "namespace", "expected"), [
    ("team-a", "group", "default", "group:default/team-a"),
    ("user:alice", None, "default", "user:default/alice"),
    ("component:ns/x", None, "default", "component:ns/x"),
    ("Group:Default/SRE", None, "default", "group:default/sre"),
    ("team-a", "Group", "Ops", "group:ops/team-a"),  # defaults are lower-cased too
    ("other/team-a", "group", "ops", "group:other/team-a"),  # an explicit namespace wins
    ("jane.doe_2", "user", "default", "user:default/jane.doe_2"),
    ("team-a", None, "default", None),  # no kind at all
    ("", "group", "default", None),
    ("group:", None, "default", None),
    (":team-a", "group", "default", None),
    ("group:/team-a", None, "default", None),
    ("group:ns/", None, "default", None),
    ("group:a:b", None, "default", None),
    ("group:ns/a/b", None, "default", None),
    ("ns/a:b", "group", "default", None),
    ("team a", "group", "default", None),
    (" team-a", "group", "default", None),
    ("team-a\n", "group", "default", None),
    ("group:te\tam", None, "default", None),
    ("1group:x", None, "default", None),
])
def test_normalize_ref(ref, default_kind, namespace, expected):
    assert normalize_ref(ref, default_kind, namespace) == expected


def test_normalize_ref_namespace_defaults_to_default():
    assert normalize_ref("sre", "group") == "group:default/sre"


# ---------------------------------------------------------------- the valid org


@pytest.fixture(scope="module")
def org():
    catalog, sources, diagnostics = load_fixture("org")
    assert diagnostics == []
    return catalog, sources


def test_org_reads_every_yaml_file_recursively(org):
    _, sources = org
    names = sorted(Path(p).relative_to(FIXTURES / "org").as_posix() for p in sources)
    assert names == ["groups.yaml", "ops/oncall.yaml", "other.yaml", "teams/components.yml",
                     "users.yaml"]  # README.md is not YAML


def test_org_entities_are_lower_case_and_others_ignored(org):
    catalog, _ = org
    assert sorted(catalog.entities) == [
        "api:default/payments-api",
        "component:default/ledger",
        "component:default/payments",
        "group:default/org",
        "group:default/payments-team",
        "group:default/platform",
        "group:default/sre",
        "group:ops/oncall",
        "user:default/alice",
        "user:default/bob",
        "user:default/carol",
        "user:default/dave",
        "user:ops/eve",
    ]  # no Location, Template, foreign apiVersion or `kind: user` (Backstage's kinds are cased)
    assert catalog.has("user:default/bob")
    assert not catalog.has("user:default/mallory")


def test_entity_fields_and_span(org):
    catalog, _ = org
    bob = catalog.entities["user:default/bob"]
    assert (bob.kind, bob.namespace, bob.name, bob.ref) == ("user", "default", "bob",
                                                            "user:default/bob")
    assert bob.member_of == ("group:default/platform",)  # a lone ref, not a list, is accepted
    assert (Path(bob.span.path).name, bob.span.line, bob.span.column) == ("users.yaml", 12, 9)
    team = catalog.entities["group:default/payments-team"]
    assert team.parent == "group:default/org"
    assert team.members == ("user:default/dave",)
    assert catalog.entities["group:default/org"].children == ("group:default/platform",)


def test_groups_within_follows_parent_and_children_from_both_sides(org):
    catalog, _ = org
    assert catalog.groups_within("group:default/org") == {
        "group:default/org", "group:default/platform", "group:default/sre",
        "group:default/payments-team"}
    assert catalog.groups_within("group:default/platform") == {
        "group:default/platform", "group:default/sre"}
    assert catalog.groups_within("group:default/sre") == {"group:default/sre"}


def test_groups_within_is_empty_for_what_is_not_a_group(org):
    catalog, _ = org
    assert catalog.groups_within("group:default/nope") == frozenset()
    assert catalog.groups_within("user:default/alice") == frozenset()


@pytest.mark.parametrize(("group", "users"), [
    ("group:default/org", {"alice", "bob", "carol", "dave"}),
    ("group:default/platform", {"alice", "bob"}),  # bob directly, alice through sre
    ("group:default/sre", {"alice"}),
    ("group:default/payments-team", {"carol", "dave"}),  # memberOf and members
    ("group:default/nope", set()),
])
def test_users_in_counts_both_sides_and_child_groups(org, group, users):
    catalog, _ = org
    assert catalog.users_in(group) == {f"user:default/{u}" for u in users}


def test_bare_refs_resolve_in_the_writing_entitys_namespace(org):
    catalog, _ = org
    assert catalog.entities["user:ops/eve"].member_of == ("group:ops/oncall",)
    assert catalog.users_in("group:ops/oncall") == {"user:ops/eve", "user:default/alice"}


@pytest.mark.parametrize(("entity", "owner"), [
    ("component:default/payments", "group:default/payments-team"),
    ("component:default/ledger", "user:default/carol"),
    ("api:default/payments-api", "group:default/sre"),
    ("group:default/sre", None),
    ("component:default/nope", None),
])
def test_owner_of(org, entity, owner):
    catalog, _ = org
    assert catalog.owner_of(entity) == owner


def test_catalog_built_by_hand():
    span = Span("x.yaml", 1, 1, 1, 2)
    catalog = Catalog({e.ref: e for e in [
        Entity("group", "default", "g", span, children=("group:default/h",)),
        Entity("group", "default", "h", span, members=("user:default/u", "user:default/ghost")),
        Entity("user", "default", "u", span),
    ]})
    assert catalog.users_in("group:default/g") == {"user:default/u"}  # only users that exist


# ---------------------------------------------------------------- diagnostics from fixtures


def test_bad_yaml_is_located_and_earlier_documents_still_count():
    catalog, sources, diagnostics = load_fixture("bad_yaml")
    assert located(diagnostics) == [
        ("catalog/bad-yaml", "broken.yaml", 13, 21),
        ("catalog/bad-yaml", "repeated.yaml", 7, 3),  # a repeated key; the note names the first
    ]
    assert diagnostics[1].notes[0][1].line == 6
    assert catalog.has("user:default/frank")
    assert not catalog.has("user:default/grace")
    assert "^" in render_text(diagnostics[0], sources)


def test_bad_entity():
    catalog, _, diagnostics = load_fixture("bad_entity")
    assert located(diagnostics) == [
        ("catalog/bad-entity", "entities.yaml", 2, 7),  # no metadata.name: at the kind
        ("catalog/bad-entity", "entities.yaml", 10, 9),  # a name with a space
        ("catalog/bad-entity", "entities.yaml", 18, 7),  # `team a`
        ("catalog/bad-entity", "entities.yaml", 19, 7),  # memberOf naming a user
        ("catalog/bad-entity", "entities.yaml", 20, 7),  # two colons
        ("catalog/bad-entity", "entities.yaml", 21, 7),  # a mapping, not a ref
        ("catalog/bad-entity", "entities.yaml", 30, 11),  # a list of parents
        ("catalog/bad-entity", "entities.yaml", 36, 14),  # a namespace with a space
        ("catalog/bad-entity", "entities.yaml", 45, 10),  # an owner that is a component
        ("catalog/bad-entity", "entities.yaml", 51, 7),  # spec is a list
        ("catalog/bad-entity", "entities.yaml", 53, 7),  # no apiVersion: at the kind
        ("catalog/bad-entity", "entities.yaml", 59, 13),  # an apiVersion of Backstage's it does not accept
    ]
    # What is valid survives: ivan's good membership, svc2 without its owner.
    assert catalog.entities["user:default/ivan"].member_of == ("group:default/ops",)
    assert catalog.owner_of("component:default/svc2") is None
    assert not catalog.has("component:not valid/svc")
    # Refused, as Backstage refuses them, and reported where they are written.
    assert not catalog.has("user:default/judy") and not catalog.has("group:default/auditors")
    by_line = {d.span.line: d for d in diagnostics}
    assert by_line[53].message == "`User` entity without `apiVersion`"
    assert "apiVersion: backstage.io/v1alpha1" in by_line[53].hint


def test_duplicate_entity_at_the_second_with_a_note_at_the_first():
    catalog, _, diagnostics = load_fixture("duplicate")
    assert located(diagnostics) == [("catalog/duplicate-entity", "b.yaml", 5, 9)]
    (note_text, first), = diagnostics[0].notes
    assert (Path(first.path).name, first.line, first.column) == ("a.yaml", 4, 9)
    # The first declaration is the one used; a group with the same name is no duplicate.
    assert catalog.entities["user:default/alice"].member_of == ("group:default/admins",)
    assert catalog.has("group:default/alice")


def test_dangling_refs_are_errors_but_owners_only_warn():
    _, _, diagnostics = load_fixture("dangling")
    assert located(diagnostics) == [
        ("catalog/dangling-ref", "refs.yaml", 15, 14),  # memberOf `sre` means group:ops/sre
        ("catalog/dangling-ref", "refs.yaml", 23, 11),  # parent
        ("catalog/dangling-ref", "refs.yaml", 24, 14),  # children
        ("catalog/dangling-ref", "refs.yaml", 25, 13),  # members
        ("catalog/dangling-ref", "refs.yaml", 32, 10),  # owner
    ]
    by_line = {d.span.line: d for d in diagnostics}
    assert "group:ops/sre" in by_line[15].message
    assert "group:default/sre" in by_line[15].hint
    assert [d.severity for d in sorted(diagnostics, key=lambda d: d.span.line)] == [
        Severity.ERROR, Severity.ERROR, Severity.ERROR, Severity.ERROR, Severity.WARNING]


def test_group_cycles_are_reported_and_queries_still_terminate():
    catalog, _, diagnostics = load_fixture("cycle")
    assert located(diagnostics) == [
        ("catalog/group-cycle", "groups.yaml", 9, 11),  # a's `parent: c` closes a → b → c → a
        ("catalog/group-cycle", "groups.yaml", 35, 11),  # d is its own parent
    ]
    assert [span.line for _, span in diagnostics[0].notes] == [10, 26]
    assert catalog.groups_within("group:default/b") == {
        "group:default/a", "group:default/b", "group:default/c", "group:default/e"}
    assert catalog.users_in("group:default/c") == {"user:default/uma"}


# ---------------------------------------------------------------- folders and files


def test_missing_folder_is_reported_at_the_catalog_statement(tmp_path):
    catalog, sources, diagnostics = load(tmp_path / "nope", FIXTURES / "org")
    assert [(d.code, d.span) for d in diagnostics] == [("check/missing-catalog", STATEMENT)]
    assert catalog.has("user:default/alice")


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "a.yaml").write_text(USER.format(name="x"))
    _, _, diagnostics = load(tmp_path / "a.yaml")
    assert [d.code for d in diagnostics] == ["check/missing-catalog"]


def test_overlapping_folders_read_each_file_once():
    catalog, _, diagnostics = load(FIXTURES / "org", FIXTURES / "org" / "teams")
    assert diagnostics == []
    assert catalog.has("component:default/ledger")


def test_symlinks_never_lead_out_of_the_folder(tmp_path):
    outside, root = tmp_path / "outside", tmp_path / "catalog"
    outside.mkdir()
    root.mkdir()
    (outside / "eve.yaml").write_text(USER.format(name="eve"))
    (root / "alice.yaml").write_text(USER.format(name="alice"))
    (root / "eve.yaml").symlink_to(outside / "eve.yaml")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    (root / "again.yaml").symlink_to(root / "alice.yaml")  # inside: read, but only once
    catalog, sources, diagnostics = load(root)
    assert diagnostics == []
    assert sorted(catalog.entities) == ["user:default/alice"]
    assert len(sources) == 1


def test_not_utf8(tmp_path):
    (tmp_path / "a.yaml").write_bytes(USER.format(name="x").encode() + b"# caf\xe9\n")
    catalog, sources, diagnostics = load(tmp_path)
    assert located(diagnostics) == [("catalog/bad-yaml", "a.yaml", 7, 6)]
    assert "caf" in render_text(diagnostics[0], sources)
    assert catalog.entities == {}


def test_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "a.yaml").write_bytes(b"\xef\xbb\xbf" + USER.format(name="x").encode())
    catalog, _, diagnostics = load(tmp_path)
    assert diagnostics == []
    assert catalog.entities["user:default/x"].span.column == 9


def test_control_character_is_bad_yaml(tmp_path):
    (tmp_path / "a.yaml").write_text(USER.format(name="x") + "# \x07\n")
    _, _, diagnostics = load(tmp_path)
    assert located(diagnostics) == [("catalog/bad-yaml", "a.yaml", 7, 3)]
    assert "U+0007" in diagnostics[0].message


def test_deep_nesting_does_not_raise(tmp_path):
    (tmp_path / "a.yaml").write_text("[" * 5000 + "]" * 5000)
    _, _, diagnostics = load(tmp_path)
    assert [d.code for d in diagnostics] == ["catalog/bad-yaml"]


def test_recursive_alias_is_not_followed(tmp_path):
    (tmp_path / "a.yaml").write_text(USER.format(name="x").replace("[]", "&m [*m]"))
    catalog, _, diagnostics = load(tmp_path)
    assert [d.code for d in diagnostics] == ["catalog/bad-entity"]
    assert catalog.has("user:default/x")


def test_unreadable_file(tmp_path, monkeypatch):
    (tmp_path / "a.yaml").write_text(USER.format(name="x"))

    def refuse(path: Path) -> bytes:  # chmod would not stop a test running as root
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    _, _, diagnostics = load(tmp_path)
    assert [(d.code, d.span) for d in diagnostics] == [("catalog/unreadable-file", STATEMENT)]


def test_every_catalog_code_is_registered():
    for code in ["catalog/bad-yaml", "catalog/bad-entity", "catalog/duplicate-entity",
                 "catalog/dangling-ref", "catalog/group-cycle", "catalog/unreadable-file"]:
        assert code in CODES
