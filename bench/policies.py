"""Generated policy sets the benchmarks share, with the requests aimed at them.

- `rule_set(n)`: one service of `n` rules (allow and deny, several atom kinds), named so that
  file order and name order agree; `rule_requests(n)` hits the worst-case rule (the last in
  either order), a middle one, and none at all (default deny). `cedar_rule_set(n)` is the same
  rules in Cedar, for the interpreter's anchor.
- `services_set(n)`: `n` small services, for memory.
- `large_set(n)`: `n` rules over services of 100, every cheap atom kind and a token claim, for
  the compiler.
- `catalog_set(n, groups)`: `n` rules over services of 100 that name catalog groups, with a catalog
  of `groups` groups (departments and their teams) and two users per team, for `policyc report`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from policyc.check import Checked
from policyc.pipeline import load_and_check

HOST = "bench.internal"


@dataclass(frozen=True)
class Probe:
    """A request the data path and the interpreter send, and the status it must get."""

    name: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    status: int


def _kind(rules: int, i: int) -> int:
    # Counted from the end so that the last rule, the worst case, is a method + prefix allow.
    return (rules - 1 - i) % 4


def _rule(rules: int, i: int) -> str:
    name = f"r{i:05d}"
    return [
        f'    allow "{name}" when method == GET and path prefix "/api/{name}/"\n',
        f'    allow "{name}" when method in [GET, HEAD] and path glob "/items/*/{name}/**"\n',
        f'    allow "{name}" when path prefix "/teams/{name}/" and header "x-team" == "team{i}"\n',
        f'    deny "{name}" when path prefix "/admin/{name}/"\n',
    ][_kind(rules, i)]


def rule_set(rules: int) -> str:
    body = "".join(_rule(rules, i) for i in range(rules))
    return f'service bench {{\n    hosts ["{HOST}"]\n    upstream "127.0.0.1:8080"\n{body}}}\n'


def rule_requests(rules: int) -> list[Probe]:
    middle = max(i for i in range(rules // 2 + 1) if _kind(rules, i) == 0)
    return [
        Probe("worst rule", "GET", f"/api/r{rules - 1:05d}/x", (("Host", HOST),), 200),
        Probe("middle rule", "GET", f"/api/r{middle:05d}/x", (("Host", HOST),), 200),
        Probe("default deny", "GET", "/nowhere", (("Host", HOST),), 403),
    ]


def cedar_rule_set(rules: int) -> str:
    """`rule_set` in Cedar: the method, path and headers in the request's context; `like` with
    `*` stands in for prefixes and globs (it also crosses '/', which these requests never test)."""
    policies = []
    for i in range(rules):
        name = f"r{i:05d}"
        condition, effect = [
            (f'context.method == "GET" && context.path like "/api/{name}/*"', "permit"),
            (f'["GET", "HEAD"].contains(context.method) && context.path like "/items/*/{name}/*"', "permit"),
            (f'context.path like "/teams/{name}/*" && context.headers has "x-team" '
             f'&& context.headers["x-team"] == "team{i}"', "permit"),
            (f'context.path like "/admin/{name}/*"', "forbid"),
        ][_kind(rules, i)]
        policies.append(f'@id("{name}")\n{effect}(principal, action, resource) when {{ {condition} }};\n')
    return "".join(policies)


def services_set(services: int, rules_per_service: int = 4) -> str:
    blocks = []
    for s in range(services):
        rules = "".join(
            f'    allow "r{r}" when method == GET and path prefix "/api/v{r}/"\n' for r in range(rules_per_service))
        blocks.append(f'service svc{s} {{\n    hosts ["svc{s}.internal"]\n    upstream "127.0.0.1:8080"\n'
                      f'    deny "no-admin" when path prefix "/admin/"\n{rules}}}\n')
    return "".join(blocks)


def large_set(rules: int, per_service: int = 100) -> str:
    """`rules` rules over services of `per_service` rules each, mixing every cheap atom kind."""
    lines = ['issuer idp {\n    url "https://idp.example.com"\n    jwks "https://idp.example.com/jwks"\n}\n',
             "condition reader = method in [GET, HEAD]\n"]
    for s in range(max(1, rules // per_service)):
        lines.append(f'service svc{s} {{\n    hosts ["svc{s}.internal"]\n    upstream "127.0.0.1:{8000 + s % 1000}"\n')
        for r in range(per_service):
            atom = [f'path prefix "/api/v{r}/"', f'path glob "/items/*/r{r}/**"',
                    f'header "x-team" == "team{r}"', f'source in "10.{r % 256}.0.0/16"'][r % 4]
            effect = "deny" if r % 10 == 0 else "allow"
            lines.append(f'    {effect} "r{r}" when reader and {atom} and token.groups contains "g{r}"\n')
        lines.append("}\n")
    return "".join(lines)


def _catalog(groups: int) -> str:
    """Departments `d*` of nine teams `t*` each, two users `u*` per team."""
    departments = max(1, groups // 10)
    teams = [f"t{i:03d}" for i in range(groups - departments)]
    entities = []
    for d in range(departments):
        children = ", ".join(teams[d::departments])
        entities.append(f"kind: Group\nmetadata:\n  name: d{d:02d}\nspec:\n  type: department\n"
                        f"  children: [{children}]\n")
    for t, team in enumerate(teams):
        entities.append(f"kind: Group\nmetadata:\n  name: {team}\nspec:\n  type: team\n"
                        f"  parent: d{t % departments:02d}\n  children: []\n")
        entities += [f"kind: User\nmetadata:\n  name: u{t:03d}{member}\nspec:\n  memberOf: [{team}]\n"
                     for member in "ab"]
    return "---\n".join(f"apiVersion: backstage.io/v1alpha1\n{e}" for e in entities)


def catalog_set(rules: int, groups: int = 100, per_service: int = 100) -> dict[str, str]:
    """Files (relative path → text): `rules` rules over services of `per_service` rules each, on
    20 endpoints per service, each allow rule for one team or department, a few for a scope claim."""
    departments = max(1, groups // 10)
    lines = ['issuer backstage {\n    url "https://backstage.example.com/api/auth"\n'
             '    jwks "https://backstage.example.com/api/auth/.well-known/jwks.json"\n    catalog users\n}\n',
             'catalog "catalog"\ncondition reader = method in [GET, HEAD]\n']
    for s in range(max(1, rules // per_service)):
        lines.append(f'service svc{s} {{\n    hosts ["svc{s}.internal"]\n    upstream "127.0.0.1:8080"\n')
        for r in range(per_service):
            name, endpoint = f"r{s * per_service + r:04d}", r % 20
            group = f"d{r % departments:02d}" if r % 7 == 0 else f"t{r % (groups - departments):03d}"
            lines.append([
                f'    allow "{name}" when reader and path prefix "/api/v{endpoint}/" '
                f'and member "group:default/{group}"\n',
                f'    allow "{name}" when method == POST and path prefix "/api/v{endpoint}/" '
                f'and member "group:default/{group}"\n',
                f'    allow "{name}" when path == "/jobs/{endpoint}" and token.scope contains "jobs{endpoint % 3}"\n',
                f'    deny "{name}" when path prefix "/admin/v{endpoint}/"\n',
            ][0 if r % 10 < 5 else 1 if r % 10 < 8 else 2 if r % 10 == 8 else 3])
        lines.append("}\n")
    return {"big.policy": "".join(lines), "catalog/org.yaml": _catalog(groups)}


def check_text(text: str) -> Checked:
    """The checked set of one generated policy file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.policy"
        path.write_text(text)
        pipeline = load_and_check([str(path)])
    if not pipeline.ok:
        raise RuntimeError(f"a generated policy does not check: {pipeline.diagnostics[:3]}")
    return pipeline.checked
