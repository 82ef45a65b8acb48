"""The emitted Lua scripts against the reference interpreter, in process.

1. The corpus: every case of tests/cases/*/ and of the backstage example whose decision reaches the
   rules (deny, allow, default-deny) runs through the script `service_script` emits for its service,
   on the request as Envoy's Lua filter would see it; the script must record the interpreter's
   decision, rule and service, and answer 403 exactly when the interpreter enforces one (a dry-run
   service never answers). Every case also runs in one state shared by the service's cases, which
   must give the same outcomes and keep no state behind.
2. Generated policies and requests (tests/property/strategies.py): the same comparison, and the
   deny-only and allow-only scripts the `auto` target emits beside RBAC filters.
3. Quoting: policy text with quotes, backslashes, newlines, `]]`, `--`, NUL and non-ASCII, in every
   place policy text reaches Lua, compiles to a script that loads and keeps its meaning.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from policyc import nodes as n
from policyc.backends.lua import lua_string, service_script
from policyc.cases.casefile import CaseFile, build_request, load_case_file
from policyc.checked import Checked
from policyc.interpret import evaluate
from policyc.interpret.evaluator import Context, _rule_decision
from policyc.pipeline import load_and_check
from policyc.semantics.headers import header_table
from policyc.semantics.hosts import admit_request
from policyc.semantics.paths import Rejected
from policyc.semantics.peer import HandshakeRefused, verified_peer
from policyc.semantics.request import Decision, RawRequest
from policyc.semantics.tokens import Token, authenticate
from tests import CASE_KEYS
from tests.lua.stand_in import Outcome, Request, ScriptState, envoy_request, from_lua, new_runtime, run_script
from tests.property import strategies

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "cases"
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"
NOW = 1_800_000_000.0  # the clock of tests/unit/test_cases.py: tokens are minted and checked at it
RULE_REASONS = {"deny", "allow", "default-deny"}  # the decisions the Lua filter makes


# ---------------------------------------------------------------- the request as the Lua filter sees it

def filter_view(checked: Checked, raw: RawRequest, now: float, keys) -> tuple[Context, Request]:
    """A request that reached the rules, as the interpreter and as Envoy's Lua filter see it, built
    with the interpreter's own steps (as `evaluate` takes them): routing and path normalization,
    jwt_authn, the codec's headers. Lua's `:path` is the normalized path plus the original query."""
    hosts = {name: service.hosts for name, service in checked.services.items()}
    host_lines = ([raw.host] if raw.host is not None else []) + [v for k, v in raw.headers if k.lower() == "host"]
    others = [(name, value) for name, value in raw.headers if name.lower() != "host"]
    parameters_allowed = {name for name, service in checked.services.items() if service.path_parameters}
    admitted = admit_request(raw.method, raw.target, host_lines, hosts, raw.version, others, parameters_allowed)
    assert not isinstance(admitted, Rejected), admitted
    identity = authenticate(admitted.headers, checked.issuers, {**checked.keys, **(keys or {})}, now)
    assert identity is None or isinstance(identity, Token), identity
    headers = header_table(admitted.headers)
    peer = verified_peer(raw.certificate, checked.trusts, now)
    assert not isinstance(peer, HandshakeRefused), peer
    ctx = Context(raw.method, admitted.target.path, headers, raw.source, identity, peer, now)
    return ctx, filter_request(ctx, admitted.target.forwarded, admitted.authority)


def filter_request(ctx: Context, path: str | None = None, authority: str = "service.test") -> Request:
    """`ctx` as Envoy hands it to the Lua filter: `path` is the whole `:path` (`ctx.path` when
    there is no query), the verified claims sit in jwt_authn's metadata."""
    headers = [(name, value) for name, values in ctx.headers.items() for value in values]
    return envoy_request(ctx.method, ctx.path if path is None else path, headers, authority=authority,
                         source=ctx.source, claims=ctx.token.claims if ctx.token else None, peer=ctx.peer)


def mismatches(decision: Decision, outcome: Outcome) -> list[str]:
    """How the script's outcome differs from the interpreter's decision."""
    found = []
    if outcome.error is not None or outcome.logs:
        found.append(f"script error {outcome.error!r}, logs {outcome.logs!r}")
    expected = (decision.reason, decision.rule, decision.service)
    got = (outcome.decision, outcome.rule, outcome.service)
    if got != expected:
        found.append(f"(decision, rule, service): interpreter {expected}, Lua {got}")
    enforced = decision.enforced_status if decision.dry_run else decision.status
    status = None if decision.dry_run or enforced != 403 else 403
    if outcome.status != status:
        found.append(f"Lua answered {outcome.status}, expected {status} (dry-run: {decision.dry_run})")
    return found


# ---------------------------------------------------------------- 1. the corpus

def _corpus() -> list[tuple[Path, Path]]:
    """(policy folder, case file) for every case file: a feature folder of tests/cases, the example."""
    files = sorted(p for pattern in ("*.cases.yaml", "*.cases.yml") for p in CASES.glob(f"*/**/{pattern}"))
    pairs = [(CASES / f.relative_to(CASES).parts[0], f) for f in files]
    return pairs + [(EXAMPLE, EXAMPLE / "example.cases.yaml")]


CORPUS = _corpus()


@functools.cache
def _checked(folder: Path) -> Checked:
    pipeline = load_and_check([str(folder)], allowed_roots=[CASE_KEYS])
    assert pipeline.ok, [f"{d.code}: {d.message}" for d in pipeline.diagnostics]
    return pipeline.checked


@functools.cache
def _script(folder: Path, service: str) -> str:
    checked = _checked(folder)
    return service_script(checked, checked.services[service])


@functools.cache
def _case_file(path: Path) -> CaseFile:
    return load_case_file(str(path))


@functools.cache
def compare_case_file(folder: Path, path: Path) -> tuple[int, int, tuple[str, ...]]:
    """(cases compared, cases decided before the rules, failures) for one case file."""
    checked, case_file = _checked(folder), _case_file(path)
    keys = case_file.keys.published(checked)
    shared: dict[str, tuple[ScriptState, str]] = {}
    compared, skipped, failures = 0, 0, []
    for case in case_file.cases:
        raw = build_request(case.request, checked, case_file.keys, NOW)
        decision = evaluate(checked, raw, NOW, keys=keys)
        if decision.reason not in RULE_REASONS:
            skipped += 1
            continue
        compared += 1
        script = _script(folder, decision.service)
        _, request = filter_view(checked, raw, NOW, keys)
        outcome = run_script(script, request)
        problems = mismatches(decision, outcome)
        if decision.service not in shared:
            state = ScriptState(script)
            shared[decision.service] = (state, state.fingerprint())
        state = shared[decision.service][0]
        if state.run(request) != outcome:
            problems.append("a state shared with earlier requests decided otherwise than a fresh one")
        failures += [f"{case.where} {case.name}: {p}" for p in problems]
    for service, (state, fingerprint) in shared.items():
        if state.added_globals() != {"envoy_on_request"}:
            failures.append(f"{path}: service {service}: globals added: {sorted(state.added_globals())}")
        if state.fingerprint() != fingerprint:
            failures.append(f"{path}: service {service}: the script's reachable state changed across requests")
    return compared, skipped, tuple(failures)


@pytest.mark.parametrize(("folder", "case_file"), CORPUS,
                         ids=[path.relative_to(ROOT).as_posix() for _, path in CORPUS])
def test_case_file_decides_alike_in_lua(folder, case_file):
    compared, _, failures = compare_case_file(folder, case_file)
    assert not failures, f"{len(failures)} of {compared} cases differ:\n" + "\n".join(failures)


def test_corpus_reaches_the_rules_often(capsys):
    """The counts of the differential: each case file has cases that reach the rules."""
    counts = {path.relative_to(ROOT).as_posix(): compare_case_file(folder, path)[:2] for folder, path in CORPUS}
    compared = sum(c for c, _ in counts.values())
    skipped = sum(s for _, s in counts.values())
    with capsys.disabled():
        print(f"\nLua differential: {compared} cases compared, {skipped} decided before the rules, "
              f"{len(counts)} case files")
    assert all(c > 0 for c, _ in counts.values()), counts
    assert compared >= 300


# ---------------------------------------------------------------- 2. generated policies

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return strategies.write_world(tmp_path_factory.mktemp("lua-world"))


def _first_allow(checked: Checked, service: n.Service, ctx: Context) -> Decision:
    """The decision of the service's allow rules alone: what an allow-only script decides."""
    allow_only = replace(service, rules=tuple(r for r in service.rules if r.effect is n.Effect.ALLOW))
    return _rule_decision(checked, allow_only, ctx)


@given(data=st.data())
def test_generated_policies_decide_alike_in_lua(world, data):
    gen = data.draw(strategies.checked_policy(world), label="policy")
    raw = data.draw(strategies.requests(gen), label="request")
    decision = evaluate(gen.checked, raw, strategies.NOW)
    event(f"reason: {decision.reason}")
    if decision.reason not in RULE_REASONS:
        return
    checked, service = gen.checked, gen.checked.services[decision.service]
    ctx, request = filter_view(checked, raw, strategies.NOW, None)
    outcome = run_script(service_script(checked, service), request)
    assert mismatches(decision, outcome) == []
    # The scripts beside RBAC filters: deny rules only (allow left to RBAC), allow rules only.
    deny_only = run_script(service_script(checked, service, allow=False), request)
    expected = (decision.reason, decision.rule) if decision.reason == "deny" else ("no-deny", None)
    assert (deny_only.decision, deny_only.rule, deny_only.error) == (*expected, None)
    allow_only = run_script(service_script(checked, service, deny=False), request)
    expected_allow = _first_allow(checked, service, ctx)
    assert (allow_only.decision, allow_only.rule, allow_only.error) == (expected_allow.reason, expected_allow.rule,
                                                                         None)
    dry_run = service.mode is n.Mode.DRY_RUN
    for split, answered in ((deny_only, expected[0] == "deny"), (allow_only, expected_allow.reason != "allow")):
        assert split.status == (403 if answered and not dry_run else None)


@given(data=st.data())
def test_grants_decide_alike_in_lua_at_the_edges_of_their_windows(world, data):
    """A clock that stands still at the second before a grant's window, its first, its last and
    the one after: the script (reading os.time) decides as the interpreter at that time."""
    gen = data.draw(strategies.checked_policy(world), label="policy")
    raw = data.draw(strategies.requests(gen), label="request")
    decision = evaluate(gen.checked, raw, strategies.NOW)
    checked = gen.checked
    service = checked.services.get(decision.service) if decision.service else None
    windows = [o for r in service.rules if r.grant for o in r.expr.operands
               if isinstance(o, n.TimeWindow)] if service else []
    event(f"a grant's window to test: {bool(windows and decision.reason in RULE_REASONS)}")
    if not windows or decision.reason not in RULE_REASONS:
        return
    window = data.draw(st.sampled_from(windows), label="window")
    ctx, request = filter_view(checked, raw, strategies.NOW, None)
    script = service_script(checked, service)
    for clock in (window.start - 1, window.start, window.end - 1, window.end):
        expected = _rule_decision(checked, service, replace(ctx, now=clock))
        outcome = run_script(f"os.time = function() return {clock} end\n" + script, request)
        assert (outcome.decision, outcome.rule, outcome.error) == (expected.reason, expected.rule, None), clock


# ---------------------------------------------------------------- 3. quoting

@given(text=st.text())
@example(text='"\\\n\r]]--[[\x00é\ud800\U0001d11e\x7f\\000')
def test_lua_string_holds_exactly_the_text(text):
    literal = lua_string(text)
    assert literal.isascii() and "\n" not in literal and "\r" not in literal and "]]" not in literal
    assert _lua().execute(f"return {literal}".encode()) == text.encode("utf-8", "surrogatepass")


@functools.cache
def _lua():
    return new_runtime()


# Tricky text: everything a Lua literal or comment could trip on. HEADER and CLAIM may hold
# anything; PATH nothing the proxy would rewrite (`"`, `\`, `//`, …); GLOB only path characters; URL
# no whitespace.
TRICKY = "q\"uo'te \\back ]]--[[ ]=] \x00nul\x01 é€𝄞 \n\r\t end"
PATH = "/q%22uo'te ]]--[[ \x00nul é€𝄞 \n\r\tx/end"
GLOB = "/q'te]]--[[(x)$-*/**"
URL = "https://idp.test/q\"uo'te\\back]]--[[\x00é€𝄞"
NESTED = ("a\"]]", "--\x00")
ODD_FILE = "we]]--\n\"ird\\é.policy"

ODD_POLICY = """
issuer odd {{
    url      {url}
    jwks file "keys/idp.jwks.json"
}}
service odd {{
    hosts    "odd.test"
    upstream "127.0.0.1:9000"
    deny  "d-header"        when header "x-d" == {t}
    allow public "h-eq"     when header "x-v" == {t}
    allow public "h-in"     when header "x-in" in [{t}, "plain", ""]
    allow public "h-prefix" when header "x-p" prefix {t}
    allow public "h-suffix" when header "x-s" suffix {t}
    allow "h-claim"         when header "x-c" == token[{t}]
    allow "c-eq"            when token[{t}] == {t}
    allow "c-nested"        when token[{n0}][{n1}] contains {t}
    allow "c-prefix"        when token.p prefix {t}
    allow "c-suffix"        when token.s suffix {t}
    allow "c-in"            when token.i in [{t}, "x"]
    allow "c-bool"          when token[{t2}] == true
    allow "iss"             when issuer odd and path == "/iss"
    allow public "p-eq"     when path == {path}
    allow public "p-in"     when path in ["/plain", {path}]
    allow public "p-prefix" when path prefix {prefix}
    allow public "g"        when path glob {glob}
}}
"""


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> Checked:
    # The file's name reaches the script too, in the comment naming each rule's file and line.
    folder = tmp_path_factory.mktemp("quoting")
    (folder / "keys").mkdir(parents=True)
    shutil.copy(CASES / "keys" / "idp.jwks.json", folder / "keys" / "idp.jwks.json")
    text = ODD_POLICY.format(t=json.dumps(TRICKY), t2=json.dumps(TRICKY + "?"), url=json.dumps(URL),
                             n0=json.dumps(NESTED[0]), n1=json.dumps(NESTED[1]), path=json.dumps(PATH),
                             prefix=json.dumps(PATH[:12]), glob=json.dumps(GLOB))
    (folder / ODD_FILE).write_text(text, encoding="utf-8")
    pipeline = load_and_check([str(folder)])
    assert pipeline.ok, [f"{d.code}: {d.message}" for d in pipeline.diagnostics]
    service = pipeline.checked.services["odd"]
    # The text arrived in the tree exactly: the test below tests quoting, not the parser.
    values = {r.name: r.expr for r in service.rules}
    assert values["h-eq"] == n.HeaderTest("x-v", n.Op.EQ, (TRICKY,))
    assert values["p-eq"] == n.PathTest(n.Op.EQ, (PATH,))
    assert pipeline.checked.issuers["odd"].url == URL
    return pipeline.checked


def _token(claims: dict) -> Token:
    return Token("odd", {"iss": URL, "sub": "s", **claims})


# (rule the interpreter names, method, path, headers, token); None: default deny.
PROBES = [
    ("d-header", "GET", "/", {"x-d": (TRICKY,), "x-v": (TRICKY,)}, None),
    (None, "GET", "/", {"x-d": (TRICKY[:-1],)}, None),
    ("h-eq", "GET", "/", {"x-v": ("other", TRICKY)}, None),
    (None, "GET", "/", {"x-v": (TRICKY + " ",)}, None),
    (None, "GET", "/", {"x-v": (TRICKY.replace("\x00", ""),)}, None),
    ("h-in", "GET", "/", {"x-in": (TRICKY,)}, None),
    ("h-in", "GET", "/", {"x-in": ("",)}, None),
    (None, "GET", "/", {"x-in": ("plain ",)}, None),
    ("h-prefix", "GET", "/", {"x-p": (TRICKY + "tail",)}, None),
    (None, "GET", "/", {"x-p": (TRICKY[:-1],)}, None),
    ("h-suffix", "GET", "/", {"x-s": ("head" + TRICKY,)}, None),
    (None, "GET", "/", {"x-s": (TRICKY[1:],)}, None),
    ("h-claim", "GET", "/", {"x-c": ("v",)}, _token({TRICKY: "v"})),
    ("c-eq", "GET", "/", {"x-c": ("w",)}, _token({TRICKY: TRICKY})),
    (None, "GET", "/", {}, _token({TRICKY + " ": TRICKY})),
    ("c-nested", "GET", "/", {}, _token({NESTED[0]: {NESTED[1]: ["z", TRICKY]}})),
    (None, "GET", "/", {}, _token({NESTED[0]: {NESTED[1] + "x": [TRICKY]}})),
    ("c-prefix", "GET", "/", {}, _token({"p": TRICKY + "!"})),
    ("c-suffix", "GET", "/", {}, _token({"s": "!" + TRICKY})),
    ("c-in", "GET", "/", {}, _token({"i": TRICKY})),
    (None, "GET", "/", {}, _token({"i": TRICKY[:5]})),
    ("c-bool", "GET", "/", {}, _token({TRICKY + "?": True})),
    ("iss", "GET", "/iss", {}, _token({})),
    (None, "GET", "/iss", {}, None),
    ("p-eq", "GET", PATH, {}, None),
    ("p-prefix", "GET", PATH + "x", {}, None),
    (None, "GET", PATH[:11], {}, None),
    ("g", "GET", "/q'te]]--[[(x)$-abc/d/e", {}, None),
    (None, "GET", "/q'te]]--[(x)$-abc/d/e", {}, None),
]


def test_odd_text_compiles_to_a_script_that_loads(odd):
    script = service_script(odd, odd.services["odd"])
    assert script.isascii() and "\x00" not in script and "\r" not in script
    for fragment in ("]]--[[", "q\"uo", "\\back", "é"):
        assert fragment not in script  # only ever as escapes
    state = ScriptState(script)
    assert state.added_globals() == {"envoy_on_request"}


@pytest.mark.parametrize(("rule", "method", "path", "headers", "token"), PROBES,
                         ids=[f"{i}-{p[0]}" for i, p in enumerate(PROBES)])
def test_odd_text_keeps_its_meaning(odd, rule, method, path, headers, token):
    service = odd.services["odd"]
    ctx = Context(method, path, headers, "127.0.0.1", token)
    decision = _rule_decision(odd, service, ctx)
    assert decision.rule == rule  # the probe hits the rule it was written for
    outcome = run_script(service_script(odd, service), filter_request(ctx, authority="odd.test"))
    assert mismatches(decision, outcome) == []


def test_odd_rule_comments_name_the_file(odd):
    script = service_script(odd, odd.services["odd"])
    rule = odd.services["odd"].rules[1]
    line = next(line for line in script.splitlines() if f"name = {lua_string(rule.name)}" in line)
    comment = line.split("  -- ", 1)[1]
    assert from_lua(_lua().execute(f"return {comment}".encode())).endswith(f"{ODD_FILE}:{rule.span.line}")
