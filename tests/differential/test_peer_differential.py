"""Peer atoms over real TLS: generated policies on client certificates (`peer.uri`, `peer.dns`,
`peer.subject`, `peer trusted`, with paths, `and`, `or`, `not`, one or two `trust` CAs), decided
by a real Envoy and by the interpreter for every request made with every kind of certificate:
valid with several SANs (the one a rule names second or third among three of each kind), a
wildcard, none at all, subject only, issued by an intermediate CA (sent with the chain), expired,
not yet valid, from a CA the policy does not trust, from a second trusted CA, and no certificate.
Both must agree on status, reason, rule and whether the upstream was reached, for `lua`, `auto`
and `rbac`, and for `native` and `auto-native` where the native library builds (the native filter
reads every SAN through the module's network filter).

POLICYC_PEER_POLICIES raises the number of generated policies for a deeper run.
"""

import datetime
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyc.backends import expressible_part, native, plan_service
from policyc.credentials import certs as devcerts
from policyc.pipeline import load_and_check
from policyc.proof.compare import compare
from policyc.proof.replay import EnvoyUnderTest
from policyc.semantics.peer import ClientCertificate
from policyc.semantics.request import RawRequest
from tests.native_target import native_search_path

pytestmark = pytest.mark.envoy

POLICIES = int(os.environ.get("POLICYC_PEER_POLICIES", "25"))
TARGETS = ("lua", "auto", "rbac")  # and `native`, `auto-native` where `envoy.targets` says so
COUNTS: dict[str, int] = {}
REFUSED: dict[str, int] = {}  # requests whose certificate no trust CA issued → how often refused
NATIVE_SANS: dict[str, int] = {}  # target → policies whose service the native filter decided on SANs

BOT_URI = "spiffe://example.org/ns/ci/sa/deploy-bot"
URIS = [BOT_URI, "spiffe://example.org/ns/ci/sa/", "spiffe://example.org/ns/ci/sa/deploy-bot2", "deploy-bot",
        "spiffe://partner.test/agent", "https://agents.example.org/x", "spiffe://", ""]
DNS = ["bot.example.org", ".example.org", "a.example.org", "*.example.org", "BOT.example.org", "bot.", ""]
SUBJECTS = ["CN=deploy-bot,O=CI", "CN=deploy-bot", "O=CI", "CN=wild,O=policyc dev", "CN=", ",O=CI", "CN=agent"]
PATHS = ["/deploy", "/status/x"]
PARTNERS = 'trust partners { ca file "partners.pem" }\n'


def _certificates(root: Path) -> dict[str, ClientCertificate | None]:
    """Writes the `mesh` and `partners` CAs into `root`; every kind of client certificate, by name."""
    mesh, partners, stranger = (devcerts.make_ca(name) for name in ("mesh", "partners", "stranger"))
    (root / "mesh.pem").write_text(mesh.cert_pem)
    (root / "partners.pem").write_text(partners.cert_pem)
    server = devcerts.issue(mesh, "proxy.test", dns=["proxy.test"], server=True)
    (root / "server.pem").write_text(server.cert_pem)
    (root / "server.key").write_text(server.key_pem)
    now = datetime.datetime.now(datetime.UTC)
    bot = {"uris": [BOT_URI], "dns": ["bot.example.org"], "organization": "CI"}
    made = {
        "bot": devcerts.issue(mesh, "deploy-bot", **bot),
        "several-sans": devcerts.issue(mesh, "builder", uris=["spiffe://example.org/ns/ci/sa/builder",
                                                              "https://agents.example.org/x"],
                                       dns=["a.example.org", "bot.example.org"]),
        "three-sans": devcerts.issue(mesh, "fleet", uris=["spiffe://partner.test/x", "deploy-bot", BOT_URI],
                                     dns=["x.test", "*.example.org", "bot.example.org"], organization="CI"),
        "wildcard": devcerts.issue(mesh, "wild", dns=["*.example.org"], organization="policyc dev"),
        "upper-case": devcerts.issue(mesh, "upper", dns=["BOT.example.org"]),
        "subject-only": devcerts.issue(mesh, "deploy-bot", organization="CI"),
        "expired": devcerts.issue(mesh, "deploy-bot", **bot, valid_from=now - 10 * devcerts.DAY, valid_days=5),
        "not-yet-valid": devcerts.issue(mesh, "deploy-bot", **bot, valid_from=now + devcerts.DAY),
        "other-ca": devcerts.issue(stranger, "deploy-bot", **bot),
        "partner": devcerts.issue(partners, "agent", uris=["spiffe://partner.test/agent"]),
    }
    intermediate = devcerts.make_ca("mesh issuing", parent=mesh)
    via = devcerts.issue(intermediate, "runner", uris=["spiffe://example.org/ns/ci/sa/runner"])
    return {"none": None, "via-intermediate": ClientCertificate(via.cert_pem + intermediate.cert_pem, via.key_pem)} | {
        name: ClientCertificate(c.cert_pem, c.key_pem) for name, c in made.items()}


def _quoted(values) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _atoms(single_trust: bool):
    def peer(field, pool, ops):
        single = st.tuples(st.sampled_from(ops), st.sampled_from(pool)).map(lambda p: f'peer.{field} {p[0]} "{p[1]}"')
        listed = st.lists(st.sampled_from(pool), min_size=1, max_size=3).map(lambda v: f"peer.{field} in {_quoted(v)}")
        return single | listed

    trusted = ["peer trusted", "peer trusted mesh"] if single_trust else ["peer trusted"]
    return st.one_of(
        peer("uri", URIS, ["==", "prefix", "suffix"]), peer("dns", DNS, ["==", "prefix", "suffix"]),
        peer("subject", SUBJECTS, ["==", "prefix", "suffix"]), st.sampled_from(trusted),
        st.sampled_from(['path == "/deploy"', 'path prefix "/status/"']),
    )


def _conditions(single_trust: bool):
    return st.recursive(_atoms(single_trust), lambda inner: st.one_of(
        inner.map(lambda e: f"not ({e})"),
        st.lists(inner, min_size=2, max_size=3).map(lambda es: "(" + " and ".join(es) + ")"),
        st.lists(inner, min_size=2, max_size=3).map(lambda es: "(" + " or ".join(es) + ")"),
    ), max_leaves=4)


@st.composite
def peer_policies(draw) -> str:
    single_trust = draw(st.booleans())
    trusts = 'trust mesh { ca file "mesh.pem" }\n' + ("" if single_trust else PARTNERS)
    rules = [f'    {draw(st.sampled_from(["allow", "deny"]))} "r{i}" when {draw(_conditions(single_trust))}'
             for i in range(draw(st.integers(1, 4)))]
    return ('tls { cert file "server.pem" key file "server.key" }\n' + trusts
            + 'service bots {\n    hosts ["bots.internal"]\n    upstream "127.0.0.1:9"\n' + "\n".join(rules) + "\n}\n")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    return root, _certificates(root)


@pytest.fixture(scope="module")
def envoy(request, tmp_path_factory):
    with native_search_path(request) as native, EnvoyUnderTest(tmp_path_factory.mktemp("envoy-tls")) as envoy:
        envoy.targets = TARGETS + (("native", "auto-native") if native else ())
        yield envoy


def test_envoy_decides_peer_atoms_over_tls_as_the_interpreter(envoy, pki):
    root, certificates = pki
    sent = [RawRequest("GET", path, "bots.internal", certificate=certificate)
            for certificate in certificates.values() for path in PATHS]
    names = [name for name in certificates for _ in PATHS]

    @settings(max_examples=POLICIES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(text=peer_policies())
    def run(text):
        (root / "peer.policy").write_text(text)
        pipeline = load_and_check([str(root / "peer.policy")])
        assert pipeline.ok, [d.message for d in pipeline.diagnostics]
        for target in envoy.targets:
            policies = expressible_part(pipeline.checked, target)
            service = policies.services["bots"]
            if plan_service(policies, service, target).deny == "native" and native.reads_sans(policies, service):
                NATIVE_SANS[target] = NATIVE_SANS.get(target, 0) + 1
            envoy.load(policies, target)
            comparisons = compare(policies, envoy.send_all(sent), time.time(), {})
            COUNTS[target] = COUNTS.get(target, 0) + len(comparisons)
            for name, comparison in zip(names, comparisons, strict=True):
                assert not comparison.differences, (
                    f"target {target}, certificate {name}:\n{text}\n{comparison.report()}\n"
                    f"  interpreter: {comparison.expected}")
                if name == "other-ca":
                    REFUSED[target] = REFUSED.get(target, 0) + (comparison.observed.status == 0)

    run()
    print(f"\npeer atoms over TLS: {POLICIES} policies x {len(sent)} requests "
          f"({len(certificates)} kinds of certificate); compared {COUNTS}, 0 differences; "
          f"untrusted-CA requests refused at the handshake: {REFUSED}; "
          f"policies decided by the native filter on SANs: {NATIVE_SANS}")
    assert {target: POLICIES * len(PATHS) for target in envoy.targets} == REFUSED
    # auto-native gives the native filter the services RBAC cannot hold (a subject test among them)
    assert all(NATIVE_SANS.get(target) for target in ("native", "auto-native") if target in envoy.targets)
