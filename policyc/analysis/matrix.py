"""The access matrix of `policyc report`: takes one checked policy set and returns, per service,
who (rows: callers with neither token nor client certificate, certificate holders per trust, each
issuer, each claim condition the rules test, each catalog group and user; all but the certificate
rows without a certificate) may send which requests (columns: the distinct method + path tests of
the rules), each cell decided exactly by the solver: `always`, `sometimes` or `never` allowed.

A column is asked about over every request its tests admit: every path its path tests match and
every method it allows, with every header, source and claim; `Column.path` is one such path, shown
as an example. Each verdict comes with the example requests the solver found (one allowed, one denied), replayed
through the interpreter before they are shown; the rules those examples name are the cell's
deciding rules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import z3

from .. import nodes as n
from ..checked import Checked
from ..semantics.compare import path_matches
from ..semantics.glob import ANY, parse_glob
from ..syntax.printer import expression
from . import witness
from .encode import Outcome
from .findings import Analyzer
from .space import LIST, MISSING, STRING, TOKEN_NONE, Undecided

ALWAYS, SOMETIMES, NEVER, UNDECIDED = "always", "sometimes", "never", "undecided"
ANONYMOUS, CERTIFICATE, ISSUER, CLAIM, GROUP, USER = "anonymous", "certificate", "issuer", "claim", "group", "user"


@dataclass(frozen=True)
class Row:
    """A class of callers: `kind` (anonymous, issuer, claim, group, user), a label, and the
    z3 condition a request's caller meets."""

    kind: str
    label: str
    caller: z3.BoolRef = field(compare=False, repr=False)
    fixed: Values = field(compare=False, repr=False)


class Values:
    """Values a row's caller condition fixes, put into z3 terms: substituted into a question,
    they often settle it without the solver. The arrays are built once, because a row's values
    go into every column's questions and `z3.substitute` builds them again on each call."""

    def __init__(self, pairs):
        self.count = len(pairs)
        self.variables, self.values = (z3.Ast * self.count)(), (z3.Ast * self.count)()
        for i, (variable, value) in enumerate(pairs):
            self.variables[i], self.values[i] = variable.as_ast(), value.as_ast()
        self.condition = z3.And([variable == value for variable, value in pairs])

    def __call__(self, term: z3.ExprRef) -> z3.ExprRef:
        if not self.count:
            return term
        return z3.ExprRef(z3.Z3_substitute(term.ctx.ref(), term.as_ast(), self.count, self.variables, self.values),
                          term.ctx)


@dataclass(frozen=True)
class Endpoint:
    """The methods (None: any) and path tests (none: any path) a rule requires."""

    methods: tuple[str, ...] | None
    paths: tuple[n.PathTest, ...]

    @property
    def label(self) -> str:
        methods = " ".join(self.methods) if self.methods else "any method"
        paths = " and ".join(expression(p).removeprefix("path ") for p in self.paths) or "any path"
        return f"{methods} {paths}"


@dataclass(frozen=True)
class Column:
    """An endpoint, asked about with one path its tests match (`path`) and each of its methods."""

    endpoint: Endpoint
    path: str

    @property
    def methods(self) -> tuple[str, ...] | None:
        return self.endpoint.methods

    @property
    def label(self) -> str:
        return self.endpoint.label


@dataclass(frozen=True)
class Witness:
    """An example request of a cell, as the interpreter decided it."""

    example: witness.Example
    status: int
    rule: str | None


@dataclass
class Cell:
    verdict: str
    allowed: Witness | None = None  # a request of the row's callers that the rules admit
    denied: Witness | None = None  # and one they refuse
    # For `never`: the deny rules that the row's values and the column's path do not rule out.
    denies: list[str] = field(default_factory=list)

    @property
    def rules(self) -> list[str | None]:
        """The rules that decide the examples (None: the default deny)."""
        return [w.rule for w in (self.allowed, self.denied) if w]


@dataclass
class ServiceMatrix:
    service: n.Service
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[int, int], Cell]  # (row, column) → cell


def conjuncts(expr: n.Expr, checked: Checked) -> list[n.Expr]:
    """The atoms `expr` requires at its top level, with named conditions written out."""
    match expr:
        case n.And(operands):
            return [a for o in operands for a in conjuncts(o, checked)]
        case n.ConditionRef(name):
            return conjuncts(checked.conditions[name].expr, checked)
    return [expr]


def endpoint(rule: n.Rule, checked: Checked) -> Endpoint:
    """The method and path tests `rule` requires of every request it matches."""
    atoms = conjuncts(rule.expr, checked)
    methods = None
    for test in (a for a in atoms if isinstance(a, n.MethodTest)):
        methods = set(test.methods) if methods is None else methods & set(test.methods)
    paths = tuple(dict.fromkeys(a for a in atoms if isinstance(a, n.PathTest)))
    return Endpoint(tuple(sorted(methods)) if methods is not None else None, paths)


def _spelled(test: n.PathTest) -> str:
    """A path `test` is likely to match: its literal, or its pattern with `x` for each wildcard."""
    value = test.values[0]
    if test.op is n.Op.PREFIX:
        return value + ("x" if value.endswith("/") else "/x")
    if test.op is n.Op.GLOB:
        return "/".join("x" if s is ANY else "x".join(s) for s in parse_glob(value))
    return value


def may_match_in(checked: Checked, rule: n.Rule, column: Column) -> bool:
    """Whether `rule` may match a request of `column` as far as methods go: False only when the
    rule requires methods the column does not allow (its paths are left to `Matrix.disjoint`)."""
    required = endpoint(rule, checked)
    return column.methods is None or required.methods is None or bool(set(column.methods) & set(required.methods))


class Matrix:
    """Builds the access matrix of every service of one checked set."""

    def __init__(self, checked: Checked):
        self.checked = checked
        self.analyzer = Analyzer(checked)
        self.space, self.encoder = self.analyzer.space, self.analyzer.encoder
        # Encode every rule first: the group rows exclude every group literal the rules look for.
        for service in checked.services.values():
            self.encoder.outcome(service)
        self.catalog_rows = self._catalog_rows()

    # ---------------------------------------------------------------- rows

    def _catalog_rows(self) -> list[Row]:
        """A group's row is a token whose `ent` lists that group and nothing else the rules or
        the catalog name (membership by the catalog's nesting counts); a user's, a token whose
        `sub` is the user, with no `ent`. Both from the issuers marked `catalog users`."""
        issuers = [i for i in self.checked.issuers.values() if i.catalog_users]
        if not issuers:
            return []
        token = z3.And(z3.Or([self.encoder.valid[i.name] for i in issuers]), self.space.certificate == -1)
        one_issuer = self._token_value(issuers[0].url) if len(issuers) == 1 else ()
        sub, ent = self.space.claim(("sub",)), self.space.claim(("ent",))
        refs = sorted(self.checked.catalog.entities)
        groups = [r for r in refs if r.startswith("group:")]
        users = [r for r in refs if r.startswith("user:")]
        for group in groups:
            ent.holds(group)
        listed = sorted(ent.members.items())
        rows = []
        for group in groups:
            fixed = (*one_issuer, (sub.kind, z3.IntVal(MISSING)), (ent.kind, z3.IntVal(LIST)),
                     *[(held, z3.BoolVal(ref == group)) for ref, held in listed])
            values = Values(fixed)
            rows.append(Row(GROUP, group, z3.And(token, values.condition), values))
        for user in users:
            fixed = (*one_issuer, (sub.kind, z3.IntVal(STRING)), *sub.text.assigned(user),
                     (ent.kind, z3.IntVal(MISSING)))
            values = Values(fixed)
            rows.append(Row(USER, user, z3.And(token, values.condition), values))
        return rows

    def _token_value(self, kind: str) -> tuple:
        """The token of `kind` and no client certificate (certificate holders have rows of their own)."""
        return ((self.space.token, z3.IntVal(self.space.token_kinds.index(kind))),
                (self.space.certificate, z3.IntVal(-1)))

    def _token_values(self, kind: str) -> Values:
        return Values(self._token_value(kind))

    def rows(self, service: n.Service) -> list[Row]:
        space, no_certificate = self.space, self.space.certificate == -1
        rows = [Row(ANONYMOUS, "no token, no certificate", z3.And(space.token_is(TOKEN_NONE), no_certificate),
                    self._token_values(TOKEN_NONE))]
        for trust in sorted(self.checked.trusts):
            cas = {ca for ca, name in self.encoder.trust_of.items() if name == trust}
            rows.append(Row(CERTIFICATE, f"certificate from trust {trust}", z3.And(
                space.token_is(TOKEN_NONE), space.issued_by(cas)), Values(self._token_value(TOKEN_NONE)[:1])))
        rows += [Row(ISSUER, f"issuer {name}", z3.And(self.encoder.valid[name], no_certificate),
                     self._token_values(issuer.url)) for name, issuer in sorted(self.checked.issuers.items())]
        claims = {}
        for rule in service.rules:
            for atom in n.walk(_written_out(rule.expr, self.checked)):
                if isinstance(atom, n.ClaimTest | n.ClaimIsBool):
                    claims.setdefault(expression(atom), atom)
        rows += [Row(CLAIM, label, z3.And(self.encoder.holds(atom), no_certificate), Values(()))
                 for label, atom in sorted(claims.items())]
        return rows + self.catalog_rows

    # ---------------------------------------------------------------- cells

    def columns(self, service: n.Service) -> list[Column]:
        """By path asked with, then methods; the column of rules that test neither comes last."""
        found = dict.fromkeys(endpoint(rule, self.checked) for rule in service.rules)
        columns = [Column(e, self.representative(e, service)) for e in found]
        return sorted(columns, key=lambda c: (c.methods is None and not c.endpoint.paths, c.path, c.label))

    def representative(self, found: Endpoint, service: n.Service) -> str:
        """A path every path test of `found` matches: a spelling of one of them, or else one the
        solver finds. When there is none (or the solver gives up), the first spelling: the cells
        are exact for whatever path the column shows."""
        spellings = [_spelled(t) for t in found.paths] or ["/"]
        for path in spellings:
            if all(path_matches(t.op, t.values, path) for t in found.paths):
                return path
        try:
            model = self.analyzer.solve(self.encoder.holds(n.And(found.paths)))
        except Undecided:
            model = None
        if model is None:
            return spellings[0]
        a = self.analyzer
        return witness.example(model, self.space, service.hosts[0], a.signer, a.issuer_names, a.now).description["path"]

    def disjoint(self, rule: n.Rule, column: Column) -> bool:
        """Whether no path meets both the path tests `rule` requires and the column's: a question
        on path tests alone, which the solver settles in milliseconds."""
        tests = endpoint(rule, self.checked).paths + column.endpoint.paths
        return bool(tests) and not self.analyzer.possible(self.encoder.holds(n.And(tests)))

    def service_matrix(self, service: n.Service, rows: list[Row] | None = None) -> ServiceMatrix:
        """The matrix of `service`, for `rows` (by default the rows of `rows(service)`)."""
        rows, columns = self.rows(service) if rows is None else rows, self.columns(service)
        cells = {}
        for c, column in enumerate(columns):
            relevant = [r for r in service.rules
                        if may_match_in(self.checked, r, column) and not self.disjoint(r, column)]
            for r, cell in self.column_cells(dataclasses.replace(service, rules=tuple(relevant)), column,
                                             rows).items():
                cells[r, c] = cell
        return ServiceMatrix(service, rows, columns, cells)

    def column_cells(self, service: n.Service, column: Column, rows: list[Row]) -> dict[int, Cell]:
        """`service` holds only the rules that may match in `column`; the others cannot change
        any answer there, and leaving them out keeps the questions small."""
        region = self.region(column, service)
        outcome = self.encoder.outcome(service)
        admitted = outcome.status == 200
        # In the column's region its own path tests hold: put that in before asking.
        line = [(self.space.paths.atom(t.op, t.values), z3.BoolVal(True)) for t in column.endpoint.paths]
        denies = self.encoder.rule_matches(service, n.Effect.DENY)
        cells = {}
        for r, row in enumerate(rows):
            try:
                allowed = self._example(region, admitted, row, line)
                denied = self._example(region, z3.Not(admitted), row, line) if allowed else None
            except Undecided:
                cells[r] = Cell(UNDECIDED)
                continue
            if allowed is None:
                cells[r] = Cell(NEVER, denies=[name for name, matches in denies
                                               if not self._settled_false(matches, row, line)])
            else:
                cells[r] = Cell(SOMETIMES if denied else ALWAYS, self._witness(allowed, service, outcome, True),
                                self._witness(denied, service, outcome, False) if denied else None)
        return cells

    def region(self, column: Column, service: n.Service) -> z3.BoolRef:
        """Every request of the column that reaches the service's rules: one of its methods, a path
        that passes its path tests and that the proxy does not refuse."""
        paths = self.encoder.holds(n.And(column.endpoint.paths)) if column.endpoint.paths else z3.BoolVal(True)
        paths = z3.And(paths, z3.Not(self.encoder.path_refused(service)))
        return z3.And(paths, self.space.method_in(column.methods)) if column.methods else paths

    def _example(self, region, goal, row: Row, line: tuple) -> z3.ModelRef | None:
        """A model of a request of `row` in `region` that meets `goal`, or None. The path's and the
        row's values are put in first: when that alone makes `goal` false, no solver is needed."""
        if self._settled_false(goal, row, line):
            return None
        return self.analyzer.solve(region, goal, row.caller)

    @staticmethod
    def _settled_false(term, row: Row, line: tuple) -> bool:
        return z3.is_false(z3.simplify(row.fixed(z3.substitute(term, *line))))

    def _witness(self, model: z3.ModelRef, service: n.Service, outcome: Outcome, allowed: bool) -> Witness:
        """The request `model` describes, confirmed by the interpreter (`witness.AnalysisError`
        when it decides otherwise than the model)."""
        example, status, rule = self.replay(model, service, outcome)
        if (status == 200) != allowed:
            raise witness.AnalysisError(f"{example.description}: predicted {'allowed' if allowed else 'denied'}, "
                                        f"the interpreter answered {status}")
        return Witness(example, status, rule)

    def replay(self, model: z3.ModelRef, service: n.Service,
               outcome: Outcome) -> tuple[witness.Example, int, str | None]:
        """The request `model` describes, replayed through the interpreter, which must name the
        status and rule `outcome` (the service's, encoded) has in the model."""
        a = self.analyzer
        example = witness.example(model, self.space, service.hosts[0], a.signer, a.issuer_names, a.now)
        status = model.eval(outcome.status, model_completion=True).as_long()
        index = model.eval(outcome.rule, model_completion=True).as_long()
        rule = self.space.rule_names[index] if index >= 0 else None
        allowed = z3.is_true(model.eval(outcome.allowed, model_completion=True))
        witness.confirm(witness.replay(self.checked, example, a.signer, a.now), status, rule, allowed,
                        f"request {example.description}")
        return example, status, rule

    def samples(self, service: n.Service, row: Row, column: Column, count: int) -> list[Witness]:
        """Up to `count` requests of `row`'s callers in `column`, each with a method the previous
        ones do not use, replayed."""
        found, used, outcome = [], [], self.encoder.outcome(service)
        while len(found) < count:
            model = self.analyzer.solve(self.region(column, service), row.caller,
                                        *[self.space.method != m for m in used])
            if model is None:
                break
            used.append(model.eval(self.space.method, model_completion=True))
            example, status, rule = self.replay(model, service, outcome)
            found.append(Witness(example, status, rule))
        return found


def _written_out(expr: n.Expr, checked: Checked) -> n.Expr:
    """`expr` with every named condition replaced by its definition."""
    match expr:
        case n.ConditionRef(name):
            return _written_out(checked.conditions[name].expr, checked)
        case n.And(operands) | n.Or(operands):
            return type(expr)(tuple(_written_out(o, checked) for o in operands))
        case n.Not(operand):
            return n.Not(_written_out(operand, checked))
    return expr


def access_matrix(checked: Checked) -> list[ServiceMatrix]:
    """Every service's matrix, in name order."""
    matrix = Matrix(checked)
    return [matrix.service_matrix(checked.services[name]) for name in sorted(checked.services)]
