"""Kubernetes: `policyc compile --format configmap` gives a ConfigMap whose bootstrap a real Envoy
runs from a folder laid out as the kubelet mounts ConfigMaps, and a ConfigMap update (the kubelet's
symlink swap) changes the policy without a restart. The committed manifests are current."""

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from policyc.backends.envoy import LISTENER_NAME
from policyc.cli import main
from policyc.proof.client import send
from policyc.proof.envoy_process import listener_ports
from policyc.proof.live import envoys_on, served_version, wait_for_version
from policyc.proof.upstream import RecordingUpstream
from policyc.semantics.request import RawRequest

ROOT = Path(__file__).parents[2]
KUBERNETES = ROOT / "envoy_configs" / "kubernetes"
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"


def compile_configmap(*args) -> dict:
    result = CliRunner().invoke(main, ["compile", *map(str, args), "--format", "configmap"])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


def kubelet_update(mount: Path, files: dict[str, str], generation: int) -> None:
    """What the kubelet does to a mounted ConfigMap: the files go into a new hidden folder, the
    `..data` symlink is swapped to it by a rename, and each name links through `..data`."""
    data = mount / f"..generation-{generation}"
    data.mkdir(parents=True)
    for name, text in files.items():
        (data / name).write_text(text)
    (mount / "..data_tmp").symlink_to(data.name)
    os.rename(mount / "..data_tmp", mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")


@pytest.mark.envoy
def test_a_configmap_update_reloads_envoy(tmp_path):
    mount, policy = tmp_path / "mount", tmp_path / "s.policy"
    with RecordingUpstream() as upstream:
        maps = []
        for path in ["/old", "/new"]:
            policy.write_text(f'service s {{\n    hosts "s.test"\n    upstream "{upstream.address}"\n'
                              f'    allow public "r" when path == "{path}"\n}}\n')
            maps.append(compile_configmap(policy, "--mount-path", mount, "--listen", "127.0.0.1:0",
                                          "--admin", "127.0.0.1:0", "--access-log", "/dev/null"))
        kubelet_update(mount, maps[0]["data"], 0)
        with envoys_on(mount, tmp_path) as (envoy,):
            port = listener_ports(envoy.admin_port)[LISTENER_NAME]
            assert served_version(envoy.admin_port) == maps[0]["metadata"]["labels"]["policyc/policy-version"]
            assert send(port, RawRequest("GET", "/new", "s.test"))[0] == 403
            kubelet_update(mount, maps[1]["data"], 1)
            wait_for_version(envoy.admin_port, maps[1]["metadata"]["labels"]["policyc/policy-version"])
            assert send(port, RawRequest("GET", "/new", "s.test"))[0] == 200


def test_committed_manifests_are_current():
    committed = yaml.safe_load((KUBERNETES / "configmap.yaml").read_text())
    assert committed == compile_configmap(EXAMPLE, "--listen", "0.0.0.0:10000"), \
        "regenerate envoy_configs/kubernetes/configmap.yaml as its README says"
    deployment, service = yaml.safe_load_all((KUBERNETES / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:2] == ["-c", "/etc/policyc/envoy.yaml"]
    assert container["args"][container["args"].index("--drain-strategy") + 1] == "immediate"
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == "/etc/policyc" and "subPath" not in mount
    assert committed["kind"] == "Secret"  # the example's `tls` key is in its files
    assert pod["volumes"] == [{"name": mount["name"], "secret": {"secretName": committed["metadata"]["name"]}}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_files_holding_a_private_key_are_packed_in_a_secret_not_a_configmap(tmp_path):
    manifest = compile_configmap(EXAMPLE)
    assert manifest["kind"] == "Secret" and "data" not in manifest
    assert "PRIVATE KEY-----" in manifest["stringData"]["lds.yaml"]
    (tmp_path / "s.policy").write_text('service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1"\n'
                                       '    allow public "r" when path == "/"\n}\n')
    assert compile_configmap(tmp_path / "s.policy")["kind"] == "ConfigMap"


def test_configmap_and_folder_outputs_exclude_each_other(tmp_path):
    for args in (["--format", "configmap", "-o", str(tmp_path / "out")], []):
        result = CliRunner().invoke(main, ["compile", str(EXAMPLE), *args])
        assert result.exit_code == 2 and "--output is needed with --format files, and only then" in result.stderr
    assert not (tmp_path / "out").exists()
