"""The gRPC differential: generated policies for gRPC services (gRPC atoms among every other
atom: tokens, claims, metadata, membership, named conditions, dry-run) and generated gRPC calls
(their methods and near misses: another method or service by a letter or by case, the service
alone, spellings that normalize alike), made by a real grpcio client through a real Envoy to a
real grpcio upstream. Each call's grpc-status as the client read it, the rule in the access log
and whether it reached the upstream must be the interpreter's, for `lua`, `auto` and `rbac`, and
for `native` and for `auto-native`.

POLICYC_GRPC_DIFF_POLICIES and POLICYC_GRPC_DIFF_CALLS (per policy) raise the counts for deep runs.
Planted bugs show that it can fail: a backend that reads `prefix` as exact, and a listener that
lets a wrong audience read PERMISSION_DENIED.
"""

import json
import os
from collections import Counter

import pytest

from policyc.backends import envoy as envoy_backend
from policyc.credentials import tokens as devtokens
from policyc.nodes import UpstreamProtocol
from policyc.pipeline import load_and_check
from policyc.proof.compare import compare
from policyc.proof.replay import EnvoyUnderTest
from tests.differential.test_envoy_differential import COUNTS, NATIVE, TARGETS, differential
from tests.differential.test_harness import prefix_as_exact  # noqa: F401 (a fixture)
from tests.grpc.support import GrpcUpstream, grpc_call
from tests.native_target import native_search_path
from tests.property.strategies import NOW, grpc_call_request, mint, signing_keys, write_world

pytestmark = pytest.mark.envoy

POLICIES = int(os.environ.get("POLICYC_GRPC_DIFF_POLICIES", "50"))
CALLS = int(os.environ.get("POLICYC_GRPC_DIFF_CALLS", "25"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def envoy(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("envoy")
    with native_search_path(request) as native, EnvoyUnderTest(
            workdir, upstream=GrpcUpstream(), upstream_protocol=UpstreamProtocol.HTTP2) as envoy:
        envoy.targets = TARGETS + (NATIVE if native else ())
        yield envoy


def grpc_differential(envoy, world, policies: int, counts: Counter, shrink: bool = True,
                      targets: tuple[str, ...] = TARGETS) -> None:
    differential(envoy, world, policies, counts, shrink, per_policy=CALLS, client=grpc_call, grpc=True,
                 targets=targets)


def test_envoy_decides_every_generated_grpc_call_as_the_interpreter(envoy, world):
    grpc_differential(envoy, world, POLICIES, COUNTS.setdefault("grpc", Counter()), targets=envoy.targets)


@pytest.fixture
def no_grpc_local_replies(monkeypatch):
    """A planted bug: the listener without its gRPC local-reply mapper (a wrong audience reads 7)."""
    monkeypatch.setattr(envoy_backend, "grpc_local_replies", lambda checked: {"mappers": []})


@pytest.mark.usefixtures("no_grpc_local_replies")
def test_a_planted_grpc_status_bug_is_a_mismatch(envoy, tmp_path):
    (tmp_path / "keys.jwks.json").write_text(json.dumps(devtokens.public_jwks(signing_keys()["backstage"])))
    (tmp_path / "p.policy").write_text(
        'issuer idp {\n    url "https://idp.test"\n    jwks file "keys.jwks.json"\n    audience "rpc"\n}\n'
        'service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1" http2\n'
        '    allow "orders" when authenticated and grpc service "shop.v1.Orders"\n}\n')
    checked = load_and_check([str(tmp_path / "p.policy")]).checked
    token = mint({"iss": "https://idp.test", "aud": "elsewhere", "exp": NOW + 3600}, "backstage")
    call = grpc_call_request("/shop.v1.Orders/Get", "s.test", [("authorization", f"Bearer {token}")])
    for target in TARGETS:
        envoy.load(checked, target)
        [comparison] = compare(checked, envoy.send_all([call], grpc_call), NOW, {})
        assert comparison.differences == ["grpc_status: interpreter 16, envoy 7"]


@pytest.mark.usefixtures("prefix_as_exact")
def test_the_generated_grpc_suite_catches_a_planted_bug(envoy, world):
    with pytest.raises(AssertionError, match="Envoy and the interpreter disagree"):
        grpc_differential(envoy, world, 100, Counter(), shrink=False)
