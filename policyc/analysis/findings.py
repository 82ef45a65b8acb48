"""`policyc analyze` and `policyc who-can`: takes one checked policy set and returns findings
about its rules, and who may send a given request, each decided exactly by the solver.

Findings, per service:
- `never-matches`: no request the proxy lets through to the rules can match the rule;
- `shadowed`: an allow rule every one of whose requests a deny rule refuses;
- `redundant`: an allow rule every one of whose admitted requests another allow rule admits too;
- `anonymous`: an allow rule not marked `public` that admits callers without a token or client
  certificate, with an example request replayed through the interpreter (`allow public` says
  that anonymous access is intended);
- `not-analysed` and `undecided`: a rule the analysis could not answer for.

Each kind has a severity (`SEVERITIES`), which `analyze --fail-on` gates on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import z3

from .. import nodes as n
from ..checked import Checked
from ..semantics.compare import path_matches
from ..semantics.paths import KNOWN_METHODS, Target, normalize_path
from ..syntax.printer import expression
from . import witness
from .encode import Encoder
from .space import LIST, MISSING, STRING, TOKEN_NONE, RequestSpace, Undecided, solve

# `warning`: likely a mistake or an open door, or a rule the analysis could not answer for;
# `note`, below it: a rule that changes no decision.
WARNING, NOTE = "warning", "note"
SEVERITIES = {"never-matches": WARNING, "shadowed": WARNING, "anonymous": WARNING, "not-analysed": WARNING,
              "undecided": WARNING, "redundant": NOTE}
# Unanswered questions: a gate on any kind or severity fails on them, since nothing is guessed.
UNANSWERED = frozenset({"not-analysed", "undecided"})


@dataclass(frozen=True)
class Finding:
    kind: str
    service: str
    rule: str
    message: str
    request: dict | None = None

    @property
    def severity(self) -> str:
        return SEVERITIES[self.kind]

    def fails(self, gates) -> bool:
        """Whether the finding fails one of the `--fail-on` gates: `any` or `note` (every finding),
        `warning`, or its kind. An unanswered question fails every gate."""
        if not gates:
            return False
        return self.kind in UNANSWERED or any(gate in ("any", NOTE, self.severity, self.kind) for gate in gates)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None} | {"severity": self.severity}


class Analyzer:
    """Questions about one checked set over its request space (of the services named, or all)."""

    def __init__(self, checked: Checked, services: set[str] | None = None):
        self.checked = checked
        self.space = RequestSpace([checked], services)
        self.now = witness.now()
        self.encoder = Encoder(self.space, checked, self.now)
        self.signer = witness.Signer()
        self.issuer_names = {i.url: name for name, i in checked.issuers.items()}

    def solve(self, *facts: z3.BoolRef) -> z3.ModelRef | None:
        # Rules are consulted only when the handshake and the token check let the request through.
        passed = z3.Not(z3.Or(self.encoder.handshake_refused, *self.encoder.token_failure()))
        return solve(self.space, passed, *facts)

    def possible(self, *facts: z3.BoolRef) -> bool:
        return self.solve(*facts) is not None

    def service_findings(self, service: n.Service) -> list[Finding]:
        matches = {r.name: self.encoder.holds(r.expr) for r in service.rules}
        denies = [r.name for r in service.rules if r.effect is n.Effect.DENY]
        allows = [r.name for r in service.rules if r.effect is n.Effect.ALLOW]
        found = []
        for rule in sorted(service.rules, key=lambda r: r.name):
            try:
                found += self.rule_findings(service, rule, matches, denies, allows)
            except Undecided as e:
                found.append(Finding("undecided", service.name, rule.name, f"the solver gave up ({e})"))
        return found

    def rule_findings(self, service: n.Service, rule: n.Rule, matches, denies, allows) -> list[Finding]:
        if not self.possible(matches[rule.name]):
            if _tests_subject_pattern(self.checked, rule.expr):
                return [Finding("not-analysed", service.name, rule.name,
                                "its certificate subject test needs a subject shape the analysis does not generate")]
            return [Finding("never-matches", service.name, rule.name, "no request that reaches the rules can match it")]
        if rule.effect is n.Effect.ALLOW:
            return self.allow_findings(service, rule, matches, denies, allows)
        return []

    def allow_findings(self, service: n.Service, rule: n.Rule, matches, denies, allows) -> list[Finding]:
        name = rule.name
        admitted = z3.And(matches[name], z3.Not(z3.Or([matches[d] for d in denies])))
        if not self.possible(admitted):
            by = self.covering(matches[name], denies, matches)
            return [Finding("shadowed", service.name, name, f"every request it matches is denied by {by}")]
        found = []
        others = [a for a in allows if a != name]
        if others and not self.possible(admitted, z3.Not(z3.Or([matches[a] for a in others]))):
            by = self.covering(admitted, others, matches)
            found.append(Finding("redundant", service.name, name, f"every request it admits is admitted by {by}"))
        # `allow public` says that anonymous callers are meant to be admitted.
        if rule.public:
            return found
        if model := self.solve(admitted, self.space.token_is(TOKEN_NONE), self.space.certificate == -1):
            found.append(self.anonymous(model, service, name))
        return found

    def covering(self, region: z3.BoolRef, candidates: list[str], matches) -> str:
        """The one rule that covers `region` by itself, or "the rules … together"."""
        for candidate in candidates:
            if not self.possible(region, z3.Not(matches[candidate])):
                return f"rule '{candidate}'"
        return "the rules " + ", ".join(f"'{c}'" for c in candidates) + " together"

    def anonymous(self, model: z3.ModelRef, service: n.Service, name: str) -> Finding:
        example = witness.example(model, self.space, service.hosts[0], self.signer, self.issuer_names, self.now)
        decision = witness.replay(self.checked, example, self.signer, self.now)
        rule = model.eval(self.encoder.outcome(service).rule, model_completion=True).as_long()
        witness.confirm(decision, 200, self.space.rule_names[rule], True, f"anonymous request {example.description}")
        return Finding("anonymous", service.name, name, "admits callers without a token or certificate",
                       example.description)


def _tests_subject_pattern(checked: Checked, expr: n.Expr) -> bool:
    """Whether `expr`, with its named conditions written out, tests the certificate subject with
    `prefix` or `suffix` (subjects are generated as `CN=…` or as the literals tests spell)."""
    def pattern(node) -> bool:
        return isinstance(node, n.PeerTest) and node.field is n.PeerField.SUBJECT and node.op in (n.Op.PREFIX,
                                                                                                   n.Op.SUFFIX)
    return any(pattern(node) or isinstance(node, n.ConditionRef)
               and _tests_subject_pattern(checked, checked.conditions[node.name].expr) for node in n.walk(expr))


def analyze(checked: Checked) -> list[Finding]:
    """The findings of every service, each asked over a space of that service's tests alone."""
    return [finding for service in checked.services.values()
            for finding in Analyzer(checked, {service.name}).service_findings(service)]


# ---------------------------------------------------------------- who-can


def residual(expr: n.Expr, method: str, path: str, checked: Checked) -> n.Expr | bool:
    """`expr` with the method and path of the request filled in: True, False, or what remains
    to be decided about the caller, headers and source."""
    match expr:
        case n.MethodTest(_, methods):
            return method in methods
        case n.PathTest(op, values):
            return path_matches(op, values, path)
        case n.ConditionRef(name):
            return residual(checked.conditions[name].expr, method, path, checked)
        case n.Not(operand):
            inner = residual(operand, method, path, checked)
            return (not inner) if isinstance(inner, bool) else n.Not(inner)
        case n.And(operands) | n.Or(operands):
            unit = isinstance(expr, n.And)
            kept = []
            for o in operands:
                value = residual(o, method, path, checked)
                if value is (not unit):
                    return not unit
                if value is not unit:
                    kept.append(value)
            if not kept:
                return unit
            return kept[0] if len(kept) == 1 else type(expr)(tuple(kept))
    return expr


@dataclass
class Access:
    """Who may send one request to one service: the conditions left per rule, and the verdict for
    anonymous callers, each catalog user and each catalog group (with a token, without a client
    certificate), and callers with a certificate from each trust (without a token)."""

    service: str
    method: str
    path: str
    allow: dict[str, str] = field(default_factory=dict)  # rule → remaining condition
    deny: dict[str, str] = field(default_factory=dict)
    anonymous: str = "no"
    callers: dict[str, str] = field(default_factory=dict)  # catalog ref → always / sometimes / never
    certificates: dict[str, str] = field(default_factory=dict)  # trust name → always / sometimes / never


def _conditions_of(rules, method, path, checked: Checked) -> dict[str, str]:
    found = {}
    for rule in sorted(rules, key=lambda r: r.name):
        left = residual(rule.expr, method, path, checked)
        if left is not False:
            found[rule.name] = "always" if left is True else expression(left)
    return found


def who_can(checked: Checked, service_name: str, method: str, path: str) -> Access:
    """Who may send `method path` to the service, once the proxy let it through: `path` is the
    normalized path the rules see (`admission.read_request` finds it, or the proxy's refusal)."""
    if method not in KNOWN_METHODS or method == "CONNECT" or normalize_path(path) != Target(path, None):
        raise ValueError(f"{method} {path} is not a request line the rules see")
    service = checked.services[service_name]
    access = Access(service_name, method, path)
    access.allow = _conditions_of([r for r in service.rules if r.effect is n.Effect.ALLOW], method, path, checked)
    access.deny = _conditions_of([r for r in service.rules if r.effect is n.Effect.DENY], method, path, checked)
    analyzer = Analyzer(checked, {service_name})
    space, encoder = analyzer.space, analyzer.encoder
    request = z3.And(space.method_is(method), space.paths.fixed(path))
    admitted = encoder.outcome(service).status == 200

    def verdict(caller: z3.BoolRef) -> str:
        """"always", "sometimes" (it depends on headers, source or other claims), "never", or
        "undecided" when the solver gave up."""
        try:
            if not analyzer.possible(request, caller, admitted):
                return "never"
            return "sometimes" if analyzer.possible(request, caller, z3.Not(admitted)) else "always"
        except Undecided:
            return "undecided"

    no_certificate = space.certificate == -1
    access.anonymous = verdict(z3.And(space.token_is(TOKEN_NONE), no_certificate))
    for trust in sorted(checked.trusts):
        cas = {ca for ca, name in encoder.trust_of.items() if name == trust}
        access.certificates[trust] = verdict(z3.And(space.token_is(TOKEN_NONE), space.issued_by(cas)))
    issuers = [i for i in checked.issuers.values() if i.catalog_users]
    sub, ent = space.claim(("sub",)), space.claim(("ent",))
    token = z3.And(z3.Or([encoder.valid[i.name] for i in issuers]), no_certificate)
    for ref in sorted(checked.catalog.entities) if issuers else []:
        if ref.startswith("user:"):
            access.callers[ref] = verdict(z3.And(token, sub.kind == STRING, sub.text.equals(ref),
                                                 ent.kind == MISSING))
        elif ref.startswith("group:"):
            access.callers[ref] = verdict(z3.And(token, sub.kind == MISSING, ent.kind == LIST, ent.holds(ref)))
    return access
