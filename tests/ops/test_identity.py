"""Identity plumbing against a real Envoy: the development IdP on a free loopback port serves its
discovery document and JWKS, `policyc token mint` tokens verify through `remote_jwks`, and after
a key rotation Envoy's periodic refetch accepts the new key; a withdrawn key is refused."""

import json
import re
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

from policyc.backends.envoy import LISTENER_NAME, Options
from policyc.cli import main
from policyc.credentials import tokens as devtokens
from policyc.dev.idp import DevIdp
from policyc.ops.deploy import deploy
from policyc.proof.client import send
from policyc.proof.envoy_process import listener_ports
from policyc.proof.live import envoys_on
from policyc.proof.upstream import RecordingUpstream
from policyc.semantics.request import RawRequest


def fetch(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def mint(keys: Path, sub: str, *claims: str) -> str:
    args = ["token", "mint", "--keys", str(keys), "--sub", sub, "--audience", "trial"]
    result = CliRunner().invoke(main, args + [a for claim in claims for a in ("--claim", claim)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_dev_idp_publishes_discovery_and_keys(tmp_path):
    with DevIdp(tmp_path / "keys.json") as idp:
        discovery = fetch(idp.issuer + "/.well-known/openid-configuration")
        assert discovery["issuer"] == idp.issuer and idp.issuer.startswith("http://127.0.0.1:")
        before = fetch(discovery["jwks_uri"])["keys"]
        assert len(before) == 1 and "d" not in before[0]
        idp.rotate()
        after = fetch(discovery["jwks_uri"])["keys"]
        assert [k["kid"] for k in after[1:]] == [before[0]["kid"]]
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0


def test_minted_claims_are_json_when_they_parse(tmp_path):
    with DevIdp(tmp_path / "keys.json"):
        token = mint(tmp_path / "keys.json", "user:default/alice", "groups=[\"sre\"]", "email_verified=true", "team=a")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["groups"] == ["sre"] and claims["email_verified"] is True and claims["team"] == "a"
    assert claims["aud"] == "trial" and claims["exp"] - claims["iat"] == 3600


def status(port: int, token: str | None) -> int:
    headers = (("Authorization", f"Bearer {token}"),) if token else ()
    return send(port, RawRequest("GET", "/x", "s.test", headers))[0]


def eventually(port: int, token: str, expected: int, timeout: float = 15.0) -> None:
    """Envoy answers `expected` for `token` within `timeout` (it refetches the JWKS every second)."""
    deadline = time.monotonic() + timeout
    while (got := status(port, token)) != expected:
        assert time.monotonic() < deadline, f"still {got}"
        time.sleep(0.05)


@pytest.mark.envoy
def test_remote_jwks_follows_key_rotation(tmp_path):
    keys = tmp_path / "keys.json"
    with DevIdp(keys) as idp, RecordingUpstream() as upstream:
        (tmp_path / "s.policy").write_text(
            f'issuer dev {{\n    url "{idp.issuer}"\n    jwks "{idp.jwks_uri}"\n    audience "trial"\n}}\n'
            f'service s {{\n    hosts "s.test"\n    upstream "{upstream.address}"\n'
            f'    allow "alice" when token.sub == "user:default/alice"\n}}\n')
        options = Options("127.0.0.1:0", "127.0.0.1:0", "/dev/null", jwks_refresh_seconds=1)
        assert deploy([str(tmp_path / "s.policy")], tmp_path / "live", options=options).version
        with envoys_on(tmp_path / "live", tmp_path) as (envoy,):
            port = listener_ports(envoy.admin_port)[LISTENER_NAME]
            first = mint(keys, "user:default/alice")
            assert (status(port, first), status(port, None), status(port, mint(keys, "user:default/bob"))) \
                == (200, 403, 403)
            first_key = json.loads(keys.read_text())["keys"][0]
            idp.rotate()
            second = mint(keys, "user:default/alice")
            eventually(port, second, 200)  # the refetch brings the new key
            assert status(port, first) == 200  # the previous key is still published
            idp.rotate()  # the first key is withdrawn
        # A running Envoy was seen to keep verifying with a withdrawn key (docs/operations.md);
        # an Envoy started now refuses it.
        late = devtokens.mint({**jwt.decode(first, options={"verify_signature": False}), "jti": "late"}, first_key)
        with envoys_on(tmp_path / "live", tmp_path / "restarted") as (envoy,):
            port = listener_ports(envoy.admin_port)[LISTENER_NAME]
            assert (status(port, late), status(port, second)) == (401, 200)


@pytest.mark.envoy
def test_demo_fetches_the_example_keys_from_development_idps(tmp_path, monkeypatch, capsys):
    from policyc.dev import demo

    monkeypatch.chdir(tmp_path)  # the demo writes out/demo under the working directory
    example = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
    assert demo.main([str(example)]) == 0
    output = capsys.readouterr().out
    assert "keys fetched from development IdPs (jwks_backstage, jwks_okta)" in output
    assert re.search(r"\b(\d+) of \1 requests decided alike", output), output
