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
- `backstage_set(n, services)`: `n` rules in the shapes of the bundled example over `services`
  services, with a catalog, for `bench/compile_size.py`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from policyc.checked import Checked
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


# The shapes of envoy_configs/examples/backstage's rules, `{i}` numbering each copy apart. The
# `tenant` rule compares a header with a claim, which RBAC cannot do: its services run Lua.
_BACKSTAGE_RULES = (
    'deny "no-debug-{i}" when path prefix "/debug/v{i}/"',
    'deny "no-contractor-writes-{i}" when not read_only and path prefix "/api/v{i}/"\n'
    '        and token.email suffix "@contractor.example.com"',
    'allow public "health-{i}" when path == "/healthz/{i}"',
    'allow "sre-read-{i}" when read_only and sre and path prefix "/api/v{i}/"',
    'allow "team-write-{i}" when method in [POST, PUT, PATCH, DELETE]\n        and path glob "/api/v{i}/**"\n'
    '        and (member "group:default/team{t}" or token.sub == "user:default/user{t}a")',
    'allow "team-read-{i}" when read_only and path glob "/api/v{i}/items/*" and member "group:default/team{t}"',
    'allow "reports-{i}" when read_only and path glob "/reports/v{i}/*.csv"\n'
    '        and token["https://example.com/roles"] contains "reader-{t}"',
    'allow "settlement-bot-{i}" when issuer okta and token.scp contains "svc{s}:settle-{i}"\n'
    '        and method == POST and path == "/api/v{i}/settlements"',
    'allow "drafts-{i}" when path glob "/drafts/v{i}/**" and token.email_verified == true\n'
    '        and token.email suffix "@example.com"',
    'allow "editors-{i}" when method == PUT and path prefix "/pages/v{i}/"\n'
    '        and header "x-docs-role" in ["editor", "admin"] and authenticated',
)
_TENANT_RULE = ('allow "tenant-{i}" when authenticated and path glob "/api/v{i}/tenants/*/invoices"\n'
                '        and header "x-tenant" == token.tenant')
# Every service's own rules; the first tests no path, so every route of the service holds it.
_SERVICE_RULES = ('    allow "owner" when member owners(component:svc{s})\n'
                  '    deny "outside-office" when not from_office and path prefix "/internal/"\n')


def backstage_set(rules: int, services: int = 20, teams: int = 40) -> dict[str, str]:
    """Files (relative path → text): `rules` rules in the example's shapes over `services`
    services, one in four also running Lua and one in ten in dry-run, with a catalog of `teams`
    teams (two users each) and a component per service."""
    header = ('issuer backstage {\n    url "https://backstage.example.com/api/auth"\n'
              '    jwks "https://backstage.example.com/api/auth/.well-known/jwks.json"\n'
              '    audience "backstage"\n    catalog users\n}\n'
              'issuer okta {\n    url "https://example.okta.com/oauth2/default"\n'
              '    jwks "https://example.okta.com/oauth2/default/v1/keys"\n    audience "api://internal"\n}\n'
              'catalog "catalog"\ncondition read_only = method in [GET, HEAD, OPTIONS]\n'
              'condition sre = member "group:default/sre"\n'
              'condition from_office = source in ["10.20.0.0/16", "fd00:20::/32"]\n')
    blocks = [header]
    for s in range(services):
        shapes = _BACKSTAGE_RULES + ((_TENANT_RULE,) if s % 4 == 3 else ())
        mode = "    mode dry-run\n" if s % 10 == 9 else ""
        own = rules // services + (s < rules % services) - 2  # two are the service's own rules
        body = "".join("    " + shapes[r % len(shapes)].format(i=r, s=s, t=(s + r) % teams) + "\n"
                       for r in range(own))
        blocks.append(f'service svc{s} {{\n    hosts ["svc{s}.internal", "svc{s}.internal:8443"]\n'
                      f'    upstream "127.0.0.1:{8000 + s}"\n{mode}{_SERVICE_RULES.format(s=s)}{body}}}\n')
    return {"big.policy": "".join(blocks), "catalog/org.yaml": _backstage_catalog(services, teams)}


def _backstage_catalog(services: int, teams: int) -> str:
    """Teams `team*` with two users each and `sre`, and a component `svc*` per service owned by a team."""
    entities = ["kind: Group\nmetadata:\n  name: sre\nspec:\n  type: team\n  children: []\n"]
    for t in range(teams):
        entities.append(f"kind: Group\nmetadata:\n  name: team{t}\nspec:\n  type: team\n  children: []\n")
        entities += [f"kind: User\nmetadata:\n  name: user{t}{m}\nspec:\n  memberOf: [team{t}]\n" for m in "ab"]
    entities += [f"kind: Component\nmetadata:\n  name: svc{s}\nspec:\n  type: service\n  lifecycle: production\n"
                 f"  owner: team{s % teams}\n" for s in range(services)]
    return "---\n".join(f"apiVersion: backstage.io/v1alpha1\n{e}" for e in entities)
