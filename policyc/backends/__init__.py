"""Backends: a `Checked` policy set → every emitted file, as {relative path: text}.

`compile_outputs(checked, target, options)` picks per service (and per effect) native RBAC or
Lua, builds the Envoy configs and returns them with the plan, or returns `rbac/unsupported`
diagnostics when `--target rbac` meets a rule RBAC cannot express.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from .. import nodes as n
from ..check import Checked
from ..diagnostics import Diagnostic
from . import envoy, rbac
from .envoy import Options, Plan
from .yaml_out import dump

TARGETS = ("auto", "rbac", "lua")


@dataclass
class Compiled:
    files: dict[str, str] = field(default_factory=dict)
    bootstrap: dict = field(default_factory=dict)  # envoy.yaml and lds.yaml before dumping
    lds: dict = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def _engine(checked: Checked, rules: list[n.Rule], target: str) -> str:
    if target != "auto":
        return target
    return "rbac" if all(rbac.expressible(checked, r) for r in rules) else "lua"


def plan_service(checked: Checked, service: n.Service, target: str) -> Plan:
    deny = [r for r in service.rules if r.effect is n.Effect.DENY]
    allow = [r for r in service.rules if r.effect is n.Effect.ALLOW]
    return Plan(_engine(checked, deny, target), _engine(checked, allow, target))


def _unsupported(checked: Checked, service: n.Service) -> list[Diagnostic]:
    diagnostics = []
    for effect in n.Effect:
        diagnostics += rbac.rules_config(checked, service, effect)[1]
    return diagnostics


def compile_outputs(checked: Checked, target: str = "auto", options: Options | None = None) -> Compiled:
    options = options or Options()
    compiled = Compiled()
    filters = {}
    for name, service in sorted(checked.services.items()):
        plan = compiled.plans[name] = plan_service(checked, service, target)
        if target == "rbac":
            compiled.diagnostics += _unsupported(checked, service)
        if not compiled.diagnostics:
            filters[name] = envoy.service_filters(checked, service, plan)
    if compiled.diagnostics:
        return compiled
    listener = envoy.listener(checked, filters, options)
    version = hashlib.sha256(json.dumps(listener, sort_keys=True).encode()).hexdigest()[:16]
    compiled.bootstrap = envoy.bootstrap(listener, envoy.clusters(checked, options), options)
    compiled.lds = envoy.lds(listener, version)
    compiled.files["envoy.yaml"] = dump(compiled.bootstrap)
    compiled.files["lds.yaml"] = dump(compiled.lds)
    for name, service_filters in filters.items():
        if service_filters.rbac_deny is not None:
            compiled.files[f"services/{name}/rbac-deny.yaml"] = dump(service_filters.rbac_deny)
        if service_filters.rbac_allow is not None:
            compiled.files[f"services/{name}/rbac-allow.yaml"] = dump(service_filters.rbac_allow)
        if service_filters.lua_source is not None:
            compiled.files[f"services/{name}/policy.lua"] = service_filters.lua_source
    targets = {name: {"deny": p.deny, "allow": p.allow} for name, p in compiled.plans.items()}
    compiled.files["targets.json"] = json.dumps(targets, indent=2, sort_keys=True) + "\n"
    return compiled
