"""The import graph keeps the layers docs/architecture.md draws: each module imports only from
layers below its own (or from its own package), only `syntax` imports lark, only the CLI imports
click, nothing in the product imports the proof but the commands that run it, no backend imports
another, and `semantics` stands on nothing but the typed tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from policyc import check
from policyc import nodes as n
from policyc.analysis.encode import Encoder
from policyc.backends import lua, native, rbac
from policyc.interpret.evaluator import Evaluator
from policyc.syntax.printer import ExpressionPrinter

PACKAGE = Path(__file__).resolve().parents[2] / "policyc"

# Lowest first. A module belongs to the first entry that is its name or a package above it.
LAYERS = [
    ["policyc.source", "policyc.resources", "policyc.files", "policyc.collector", "policyc.output",
     "policyc.credentials"],
    ["policyc.diagnostics"],
    ["policyc.roots"],
    ["policyc.nodes"],
    ["policyc.semantics"],
    ["policyc.catalog", "policyc.syntax"],
    ["policyc.checked"],
    ["policyc.templates", "policyc.grants"],
    ["policyc.catalog_services"],
    ["policyc.loader", "policyc.check"],
    ["policyc.pipeline"],
    ["policyc.interpret"],
    ["policyc.backends"],
    ["policyc.analysis", "policyc.cases"],
    ["policyc.ops", "policyc.report", "policyc.explain", "policyc.editor"],
    ["policyc.proof"],
    ["policyc.dev"],
    ["policyc.cli"],
    ["policyc.__main__", "policyc"],
]
# The backends proper: each renders a policy for one engine and knows no other. The assembly
# (`envoy`, the package) combines them; `resolve`, `accesslog` and `yaml_out` are shared by all.
BACKENDS = {"policyc.backends.rbac", "policyc.backends.lua", "policyc.backends.native"}
RUNS_THE_PROOF = {"policyc.cli", "policyc.dev.demo", "policyc.dev.catalog_demo"}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str, root: Path = PACKAGE) -> bool:
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or path.is_dir()


def imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module `path` imports, by absolute name (`from . import x` names the module x)."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{target}.{alias.name}" for alias in node.names} if target.startswith("policyc") else set()
            found |= {m for m in submodules if _is_module(m, root)} or {target}
    return found


MODULES = {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> tuple[int, str]:
    """The layer of a module and the entry of LAYERS that placed it there."""
    for rank, entries in enumerate(LAYERS):
        for entry in entries:
            if module == entry or module.startswith(entry + ".") and entry != "policyc":
                return rank, entry
    return len(LAYERS) - 1, "policyc"


def ours(names: set[str]) -> set[str]:
    return {name for name in names if name == "policyc" or name.startswith("policyc.")}


def test_every_module_imports_only_from_layers_below_or_its_own_package():
    wrong = []
    for module, imported in MODULES.items():
        rank, home = layer(module)
        for target in ours(imported):
            target_rank, target_home = layer(target)
            if target_home != home and target_rank >= rank:
                wrong.append(f"{module} (layer {rank}) imports {target} (layer {target_rank})")
    assert not wrong, "\n".join(wrong)


def test_every_module_has_a_layer():
    placed = {entry for entries in LAYERS for entry in entries}
    unplaced = [m for m in MODULES if m != "policyc" and layer(m)[1] == "policyc"]
    assert not unplaced, f"add these to LAYERS (tests/unit/test_architecture.py): {unplaced}"
    assert all(_is_module(entry) for entry in placed if entry != "policyc"), "LAYERS names a module that is gone"


@pytest.mark.parametrize(("library", "allowed"), [("lark", "policyc.syntax"), ("click", "policyc.cli")])
def test_a_library_is_imported_by_one_place_only(library, allowed):
    users = [m for m, imported in MODULES.items()
             if any(i == library or i.startswith(library + ".") for i in imported)]
    assert users and all(m == allowed or m.startswith(allowed + ".") for m in users), users


def test_nothing_in_the_product_imports_the_proof_but_the_commands_that_run_it():
    users = {m for m, imported in MODULES.items() if not m.startswith("policyc.proof")
             and any(i.startswith("policyc.proof") for i in imported)}
    assert users <= RUNS_THE_PROOF, users - RUNS_THE_PROOF


def test_no_backend_imports_another():
    wrong = [f"{m} imports {i}" for m in BACKENDS for i in MODULES[m] if i in BACKENDS - {m}]
    shared = [f"{m} imports {i}" for m, imported in MODULES.items()
              if m.startswith("policyc.backends.") and m not in BACKENDS | {"policyc.backends.envoy"}
              for i in imported if i in BACKENDS]
    assert not wrong + shared, wrong + shared


def test_semantics_stands_on_the_typed_tree_alone():
    allowed = {"policyc.nodes", "policyc.source", "policyc.diagnostics"}
    wrong = [f"{m} imports {i}" for m, imported in MODULES.items() if m.startswith("policyc.semantics")
             for i in ours(imported) if not i.startswith("policyc.semantics") and i not in allowed]
    assert not wrong, wrong


def test_the_check_fails_on_an_upward_import(tmp_path):
    """The checks above can fail: a planted upward import is found."""
    planted = tmp_path / "policyc" / "semantics" / "planted.py"
    planted.parent.mkdir(parents=True)
    planted.write_text("from ..interpret import evaluate\n")
    assert imports(planted, tmp_path / "policyc") == {"policyc.interpret"}
    assert layer("policyc.semantics.planted")[0] < layer("policyc.interpret")[0]


# Every engine that reads conditions, one `nodes.Visitor` each.
ENGINES: list[type[n.Visitor]] = [check._ExprChecker, check._Anonymous, Evaluator, rbac.PrincipalBuilder,
                                  lua._Emitter, native._Renderer, Encoder, ExpressionPrinter]


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: f"{e.__module__}.{e.__qualname__}")
def test_every_engine_handles_every_node_type(engine):
    assert not n.missing_handlers(engine), "missing: " + ", ".join(n.missing_handlers(engine))


def test_a_node_type_without_a_handler_is_named():
    class Partial(n.Visitor):
        lowered = frozenset({n.GrpcTest})

        def visit_And(self, expr):
            return True

    missing = n.missing_handlers(Partial)
    assert "test_architecture.test_a_node_type_without_a_handler_is_named.<locals>.Partial.visit_PathTest" in \
        [m.removeprefix("tests.unit.") for m in missing]
    assert len(missing) == len(n.EXPRESSIONS) - 2
    assert Partial().visit(n.And(())) is True
