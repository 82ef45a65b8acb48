"""The native policy filter (native_runtime/) in a real Envoy 1.40: loaded from the search path or
by file name, an allowed request reaches the upstream, every other request is answered 403 by the
filter and never reaches it, each decision is recorded for the access log; and every way the module
can be missing or misconfigured stops Envoy from taking the config rather than letting requests
through. tests/native/test_native_index.py covers the decisions themselves."""

from __future__ import annotations

import http.client

import pytest

from policyc.backends import native
from policyc.backends.envoy import native_on
from policyc.proof.envoy_process import running_envoy
from policyc.proof.upstream import RecordingUpstream

from .conftest import (
    RUNTIME,
    bootstrap,
    build,
    dynamic_module_filter,
    log_entries,
    route_config,
    route_filter_config,
    section,
    service_route,
    validate,
    x,
)

pytestmark = pytest.mark.envoy

POLICY = route_config(section("demo", [f"allow {x('health')} path eq 1 {x('/health')}",
                                       f"allow {x('status')} path eq 1 {x('/api/status')}"]))
FLUSH = ["--file-flush-interval-msec", "10"]


def get(port: int, target: str, method: str = "GET") -> tuple[int, bytes, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def test_allowed_paths_reach_the_upstream_and_others_are_refused(module_dir, search_path, tmp_path):
    search_path(module_dir)
    log_path = tmp_path / "access.log"
    with RecordingUpstream() as upstream:
        config = bootstrap([dynamic_module_filter()], log_path, upstream.port, route=POLICY)
        with running_envoy(config, tmp_path, FLUSH) as envoy:
            port = envoy.listener_ports["main"]
            answers = [get(port, target, method) for target, method in [
                ("/health", "GET"), ("/api/status?verbose=1", "POST"), ("/other", "GET"),
                ("/health/", "GET"), ("/HEALTH", "GET")]]
        reached = [received.target for received in upstream.received]
    assert [status for status, _, _ in answers] == [200, 200, 403, 403, 403]
    assert reached == ["/health", "/api/status?verbose=1"]
    status, body, headers = answers[2]
    assert (body, headers["content-type"]) == (b"access denied\n", "text/plain")
    entries = log_entries(log_path, 5)
    assert [entry["native"] for entry in entries] == ["allow health", "allow status", *["default-deny"] * 3]
    assert [entry["details"] for entry in entries[2:]] == ["policyc_denied"] * 3


def test_a_good_config_validates(module_dir, search_path, tmp_path):
    search_path(module_dir)
    result = validate(bootstrap([dynamic_module_filter()], tmp_path / "access.log", route=POLICY), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# A few of the ways a config can be malformed (test_index_driver.py tries every one outside Envoy).
BAD_LISTENER_CONFIGS = {
    "empty": "",
    "the earlier format": "policyc-native 4\n",
    "an unknown filter in the chain": native.HEADER + "chain rbac\n",
    "a section": POLICY,
    "a relies line": native.HEADER + "relies lua\n",
}


@pytest.mark.parametrize("config", BAD_LISTENER_CONFIGS.values(), ids=BAD_LISTENER_CONFIGS)
def test_a_listener_config_that_does_not_parse_is_refused(module_dir, search_path, tmp_path, config):
    """The module's config_new returns NULL, and Envoy rejects the filter: validation fails, and an
    Envoy started on it exits instead of serving."""
    search_path(module_dir)
    result = validate(bootstrap([dynamic_module_filter(config)], tmp_path / "access.log"), tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Failed to initialize dynamic module" in output
    assert "policyc: the policy filter's config does not parse; refusing it" in output  # the module's own log


BAD_ROUTE_CONFIGS = {
    "none": None,
    "no filter_config": "no filter_config",
    "empty": "",
    "the earlier format": POLICY.replace(native.HEADER, "policyc-native 4\n"),
    "no end": POLICY.removesuffix("end\n"),
    "an unknown keyword": POLICY.replace("path eq", "path equals"),
    "upper-case hex": POLICY.replace(x("health"), x("health").upper()),
    "a ref to no condition": POLICY.replace(f"path eq 1 {x('/health')}", "ref 0"),
    "a trailing token": POLICY.replace(f"{x('/health')}\n", f"{x('/health')} {x('/x')}\n"),
    "two sections": POLICY + section("demo", []),
    "no section": native.HEADER,
    "a chain line": native.HEADER + "chain lua\n" + POLICY.removeprefix(native.HEADER),
    "a section and relies": native.HEADER + "relies lua\n" + POLICY.removeprefix(native.HEADER),
    "relies on nothing": native.HEADER + "relies\n",
    "relies twice": native.HEADER + "relies lua\nrelies rbac-allow\n",
    "nested too deep": route_config(section("demo", [f"allow {x('deep')} {'not ' * 300}method 0"])),
}
FILTER = dynamic_module_filter()
OFF = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}


@pytest.mark.parametrize("config", BAD_ROUTE_CONFIGS.values(), ids=BAD_ROUTE_CONFIGS)
def test_a_route_config_that_does_not_parse_is_refused(module_dir, search_path, tmp_path, config):
    """The module's per-route config_new returns NULL, and Envoy rejects the routes. A route that
    gives the filter no config of its own (None) is taken, and decided `error` (below)."""
    search_path(module_dir)
    route = service_route(POLICY)
    route["typed_per_filter_config"][FILTER["name"]] = route_filter_config(None)
    host = {"name": "demo", "domains": ["*"], "routes": [route]} if config == "no filter_config" else None
    result = validate(bootstrap([FILTER], tmp_path / "access.log", route=config, virtual_hosts=host and [host]),
                      tmp_path, "warning")
    output = result.stdout + result.stderr
    if config is None:
        assert result.returncode == 0, output
        return
    assert result.returncode != 0
    assert "policyc: a route's config for the policy filter does not parse; refusing it" in output


def test_the_emitted_route_config_is_taken_without_a_warning(module_dir, search_path, tmp_path):
    """The compiler's route config (envoy.native_on) uses no field Envoy warns is deprecated (a
    runtime that refuses those would reject it)."""
    search_path(module_dir)
    host = {"name": "demo", "domains": ["*"], "routes": [
        {**service_route(None), "typed_per_filter_config": {FILTER["name"]: native_on(POLICY)}}]}
    result = validate(bootstrap([FILTER], tmp_path / "access.log", virtual_hosts=[host]), tmp_path, "warning")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Deprecated" not in output


def test_a_host_turns_the_filter_off_and_its_service_route_back_on(module_dir, search_path, tmp_path):
    """As the compiler emits every host: the refusal route answers by itself, without the filter's
    403, and the service route is decided by the filter with the route's own config."""
    search_path(module_dir)
    log_path = tmp_path / "access.log"
    refusal = {"match": {"prefix": "/refused"}, "direct_response": {"status": 400}}
    host = {"name": "demo", "domains": ["*"], "routes": [refusal, service_route(POLICY)],
            "typed_per_filter_config": {FILTER["name"]: OFF}}
    with running_envoy(bootstrap([FILTER], log_path, virtual_hosts=[host]), tmp_path, FLUSH) as envoy:
        answers = [get(envoy.listener_ports["main"], target)[0] for target in ("/refused", "/health", "/other")]
    assert answers == [400, 200, 403]
    assert [entry["native"] for entry in log_entries(log_path, 3)] == [None, "allow health", "default-deny"]


def test_an_envoy_started_on_a_refused_config_does_not_serve(module_dir, search_path, tmp_path):
    search_path(module_dir)
    config = bootstrap([dynamic_module_filter(BAD_LISTENER_CONFIGS["a section"])], tmp_path / "access.log")
    with pytest.raises(RuntimeError, match="envoy exited"), running_envoy(config, tmp_path):
        pass


def test_a_missing_module_is_refused(tmp_path, search_path):
    search_path(tmp_path)  # an empty folder
    result = validate(bootstrap([dynamic_module_filter()], tmp_path / "access.log"), tmp_path)
    assert result.returncode != 0
    assert "libpolicyc_native.so" in result.stdout + result.stderr


def test_a_module_named_by_its_path_needs_no_search_path(module_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", raising=False)
    path = module_dir / "libpolicyc_native.so"
    host = {"name": "demo", "domains": ["*"], "routes": [service_route(POLICY, module_path=path)]}
    config = bootstrap([dynamic_module_filter(path=path)], tmp_path / "access.log", virtual_hosts=[host])
    with running_envoy(config, tmp_path) as envoy:
        assert [get(envoy.listener_ports["main"], target)[0] for target in ("/health", "/")] == [200, 403]
    missing = bootstrap([dynamic_module_filter(path=tmp_path / "none.so")], tmp_path / "access.log")
    result = validate(missing, tmp_path)
    assert result.returncode != 0
    assert "none.so: cannot open shared object file" in result.stdout + result.stderr


# Ways a build of the module can go wrong, as edits of its source; Envoy must refuse each at load.
BROKEN_BUILDS = {
    "program init returns NULL": ("return POLICYC_ENVOY_ABI_VERSION;", "return NULL;",
                                  "envoy_dynamic_module_on_program_init returned null"),
    "a callback Envoy lacks": ("claims_free(&request.claims);",
                               'extern void envoy_dynamic_module_callback_none(void);\n'
                               '  envoy_dynamic_module_callback_none();\n'
                               "  claims_free(&request.claims);",
                               "undefined symbol: envoy_dynamic_module_callback_none"),
}


@pytest.mark.parametrize("case", BROKEN_BUILDS)
def test_a_broken_module_is_refused_at_load(tmp_path, case):
    old, new, message = BROKEN_BUILDS[case]
    source = (RUNTIME / "policy_filter.c").read_text()
    assert old in source
    (tmp_path / "broken.c").write_text(source.replace(old, new))
    path = build(tmp_path, "broken", tmp_path / "broken.c")
    result = validate(bootstrap([dynamic_module_filter(path=path)], tmp_path / "access.log"), tmp_path)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
