"""Backends: a `Checked` policy set → every emitted file, as {relative path: text}.

`compile_outputs(checked, target, options, parts)` picks per service (and per effect) Envoy's RBAC
or Lua, or for `--target native` the native filter, builds the Envoy configs and returns them with
the plan, or returns `rbac/unsupported` diagnostics when `--target rbac` meets a rule RBAC cannot
express (the native filter and Lua express every rule).

`auto` picks per service the fastest target that expresses it, among those a stock Envoy runs:
RBAC for each effect whose rules it expresses, Lua for the rest. `auto-native` is `auto` for an
Envoy that loads the native filter's library: RBAC where it expresses the whole service, else the
native filter (which expresses every rule) in place of Lua. RBAC stays first so that Envoy's own
filter decides every service it can; counted, the native filter costs fewer instructions per
request at every rule count (README.md *Performance*), which `--target native` gives every service.
The choice reads only the policy, never the machine: the same policy compiles to the same files.

`compile_dynamic(checked, target, options, config_dir)` gives the same policy for hot reloads:
`envoy.yaml` (a bootstrap holding no policy) and `cds.yaml`, `lds.yaml`, `rds.yaml` for the watched
folder `config_dir`. The policy version, a hash of the listener, routes and clusters, is stamped
on every route (so each access-log line names it) and is the version of the routes' file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

from .. import collector
from .. import nodes as n
from ..checked import Checked
from ..diagnostics import Diagnostic
from . import envoy, native, rbac
from .envoy import Options, Plan
from .yaml_out import dump

TARGETS = ("auto", "auto-native", "rbac", "lua", "native")
# The targets whose output needs the native filter's library on Envoy's module search path.
NATIVE_TARGETS = ("native", "auto-native")
# The targets that cannot express every rule, and how each tells whether it can express one.
_EXPRESSIBLE = {"rbac": rbac.expressible}


@dataclass
class Compiled:
    files: dict[str, str] = field(default_factory=dict)
    bootstrap: dict = field(default_factory=dict)  # envoy.yaml before dumping
    plans: dict[str, Plan] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    version: str = ""
    versions: dict[str, str] = field(default_factory=dict)  # each xDS file's version_info


def _engine(checked: Checked, rules: list[n.Rule], target: str) -> str:
    if target not in ("auto", "auto-native"):
        return target
    return "rbac" if all(rbac.expressible(checked, r) for r in rules) else "lua"


def plan_service(checked: Checked, service: n.Service, target: str) -> Plan:
    """Which engines enforce the service under `target` (module docstring: how `auto` chooses)."""
    if target == "native":  # it decides a service whole
        return Plan("native", "native")
    deny = [r for r in service.rules if r.effect is n.Effect.DENY]
    allow = [r for r in service.rules if r.effect is n.Effect.ALLOW]
    plan = Plan(_engine(checked, deny, target), _engine(checked, allow, target))
    # Where RBAC cannot express an effect, the native filter takes the whole service, in place of
    # Lua: it decides a service whole, and every rule.
    return Plan("native", "native") if target == "auto-native" and "lua" in (plan.deny, plan.allow) else plan


def _unsupported(checked: Checked, service: n.Service) -> list[Diagnostic]:
    """The located errors of the service's rules that RBAC cannot express."""
    diagnostics, builder = [], rbac.PrincipalBuilder(checked)
    for effect in n.Effect:
        diagnostics += rbac.rules_config(builder, service, effect)[1]
    return diagnostics


def expressible(checked: Checked, rule: n.Rule, target: str) -> bool:
    """Whether compiling for `target` can express `rule` (always, for `auto` and `lua`)."""
    return target not in _EXPRESSIBLE or _EXPRESSIBLE[target](checked, rule)


def expressible_part(checked: Checked, target: str) -> Checked:
    """The policy set without the rules `target` cannot express: what compiling for it can run.
    The proof compares Envoy with the interpreter on this part."""
    if target not in _EXPRESSIBLE:
        return checked
    services = {name: replace(service, rules=tuple(r for r in service.rules if expressible(checked, r, target)))
                for name, service in checked.services.items()}
    return replace(checked, services=services)


def _filters(checked: Checked, target: str, compiled: Compiled) -> dict[str, envoy.ServiceFilters]:
    """Each service's filter configs, its plan recorded in `compiled` (or diagnostics, and none)."""
    filters = {}
    for name, service in sorted(checked.services.items()):
        plan = compiled.plans[name] = plan_service(checked, service, target)
        if target in _EXPRESSIBLE:
            compiled.diagnostics += _unsupported(checked, service)
        if not compiled.diagnostics:
            filters[name] = envoy.service_filters(checked, service, plan)
    return filters if not compiled.diagnostics else {}


def _policy_version(checked: Checked, filters: dict, options: Options) -> str:
    """The hash of what Envoy is given, the same whether it is loaded whole or from a watched folder."""
    routes = {"route_config": envoy.route_config(checked, filters, options, "")}
    unstamped = envoy.listener(checked, routes, options, filters)
    return _hash([unstamped, envoy.clusters(checked, options)])


def _hash(value) -> str:
    # The configs hold no cycles (shared sub-trees, a rule's policy in many routes, are no cycle):
    # the encoder's check for them only slows it down. The text, and so the hash, is the same.
    return hashlib.sha256(json.dumps(value, sort_keys=True, check_circular=False).encode()).hexdigest()[:16]


@collector.paused()  # a third of the compile time at 10,000 rules went to the collector
def compile_outputs(checked: Checked, target: str = "auto", options: Options | None = None,
                    parts: bool = False) -> Compiled:
    """`envoy.yaml` (the bootstrap, which holds everything once) and `targets.json`; with `parts`,
    also each service's filter configs under `services/`, copies for an Envoy of one's own."""
    options = options or Options()
    compiled = Compiled()
    filters = _filters(checked, target, compiled)
    if compiled.diagnostics:
        return compiled
    compiled.version = version = _policy_version(checked, filters, options)
    routes = envoy.route_config(checked, filters, options, version)
    listener = envoy.listener(checked, {"route_config": routes}, options, filters)
    # The listener is written once, inside the bootstrap that runs as is; hot reloads take it
    # from the watched folder `compile_dynamic` fills instead.
    compiled.bootstrap = envoy.bootstrap(listener, envoy.clusters(checked, options), options)
    compiled.files["envoy.yaml"] = dump(compiled.bootstrap)
    for name, service_filters in filters.items() if parts else ():
        if service_filters.rbac_deny is not None:
            compiled.files[f"services/{name}/rbac-deny.yaml"] = dump(service_filters.rbac_deny)
        if service_filters.rbac_allow is not None:
            compiled.files[f"services/{name}/rbac-allow.yaml"] = dump(service_filters.rbac_allow)
        if service_filters.lua_source is not None:
            compiled.files[f"services/{name}/policy.lua"] = service_filters.lua_source
        if service_filters.native_section is not None:  # its routes' config for the native filter
            compiled.files[f"services/{name}/native.conf"] = native.route_config(service_filters.native_section)
    targets = {name: {"deny": p.deny, "allow": p.allow} for name, p in compiled.plans.items()}
    compiled.files["targets.json"] = json.dumps(targets, indent=2, sort_keys=True) + "\n"
    return compiled


@collector.paused()
def compile_dynamic(checked: Checked, target: str, options: Options, config_dir: str) -> Compiled:
    """The files of a watched folder at `config_dir` (an absolute path as Envoy will see it)."""
    compiled = Compiled()
    filters = _filters(checked, target, compiled)
    if compiled.diagnostics:
        return compiled
    compiled.version = version = _policy_version(checked, filters, options)
    resources = {
        "cluster": envoy.clusters(checked, options),
        "routes": [envoy.route_config(checked, filters, options, version)],
        "listener": [envoy.listener(checked, envoy.rds(config_dir), options, filters)],
    }
    compiled.bootstrap = envoy.dynamic_bootstrap(config_dir, options)
    compiled.files["envoy.yaml"] = dump(compiled.bootstrap)
    for kind, file in envoy.DYNAMIC_FILES.items():
        # The routes carry the policy version. Clusters and listener are versioned by their own
        # content, so a rule change leaves their files as they were and Envoy reloads routes only.
        compiled.versions[file] = version if kind == "routes" else _hash(resources[kind])
        compiled.files[file] = dump(envoy.discovery_response(kind, resources[kind], compiled.versions[file]))
    return compiled
