"""Policy unit tests: YAML case files → requests (with tokens minted from claims) and expected
decisions; `run_cases` replays them through the interpreter and reports each result.

A case file:

    signing_keys: {backstage: keys/backstage.private.jwk.json}   # optional, per issuer
    cases:
      - name: alice reads
        request: {method: GET, path: /x, host: a.internal, headers: {…}, source: 10.0.0.1,
                  token: {issuer: backstage, claims: {sub: user:default/alice}}}
        expect: {status: 200, rule: read}

Each case is decided over every protocol (HTTP/1.1, h2c, h2), or only over the one its request
names (`protocol: h2c`). Where a protocol decides otherwise, `expect` says so under its name:
`expect: {status: 400, h2c: {status: 200, rule: read}, h2: {status: 200, rule: read}}`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

import yaml

from ..checked import Checked
from ..credentials import tokens as devtokens
from ..files import why, yaml_problem
from ..semantics.peer import ClientCertificate
from ..semantics.request import PROTOCOLS, Decision, RawRequest, RequestError

_TOKEN_FIELDS = {"issuer", "claims", "alg", "kid", "signed_by", "scheme", "in", "expires_in", "not_before_in",
                 "pad", "tamper", "header_text", "payload_text"}


class CaseFileError(ValueError):
    """A case file that cannot be read or is not of the documented shape; names file and line."""


class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping, so failures point into the case file."""


def _construct_mapping(loader, node):
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(value):
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != "__line__"}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


@dataclass(frozen=True)
class Case:
    name: str
    where: str  # file:line
    request: dict  # as written, token spec included
    expect: dict


@dataclass
class Keys:
    """Private signing keys per issuer: loaded from the case file, or made up for remote issuers."""

    private: dict[str, dict] = field(default_factory=dict)
    stranger: dict = field(default_factory=lambda: devtokens.generate_key("ES256"))

    def for_issuer(self, checked: Checked, issuer: str) -> dict:
        if issuer not in self.private:
            if issuer in checked.keys:
                raise CaseFileError(f"issuer `{issuer}` reads its keys from a file; give its private key "
                                    "under `signing_keys` to mint tokens for it")
            self.private[issuer] = devtokens.generate_key("ES256")
        return self.private[issuer]

    def published(self, checked: Checked) -> dict[str, dict]:
        """The JWKS the proxy would fetch for each remote-key issuer (made-up keys included)."""
        return {name: devtokens.public_jwks(key) for name, key in self.private.items() if name not in checked.keys}


@dataclass
class CaseFile:
    path: str
    cases: list[Case]
    keys: Keys


def _text(path: str, context: str = "") -> str:
    """The UTF-8 text of the case file or of a file it names; `context` begins the error."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CaseFileError(f"{context}cannot read {path}: {why(e)}") from None


def _signing_keys(path: str, data: dict) -> Keys:
    """`signing_keys: {issuer: key file}`, the files relative to the case file."""
    named = _strip_lines(data.get("signing_keys", {}))
    if not isinstance(named, dict) or not all(isinstance(v, str) for v in named.values()):
        raise CaseFileError(f"{path}: `signing_keys` maps issuer names to key files")
    keys = Keys()
    for issuer, key_path in named.items():
        key_text = _text(os.path.join(os.path.dirname(path), key_path), f"{path}: signing key of `{issuer}`: ")
        try:
            keys.private[issuer] = json.loads(key_text)
        except ValueError as e:
            raise CaseFileError(f"{path}: signing key of `{issuer}`: not JSON: {e}") from None
        if not isinstance(keys.private[issuer], dict):
            raise CaseFileError(f"{path}: signing key of `{issuer}`: not a private JWK (a JSON object)")
    return keys


def load_case_file(path: str) -> CaseFile:
    text = _text(path)
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        raise CaseFileError(yaml_problem(path, e)) from None
    except RecursionError:
        raise CaseFileError(f"{path}: nested too deeply to read") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise CaseFileError(f"{path}: a case file is a mapping with a `cases` list")
    keys = _signing_keys(path, data)
    cases = []
    for i, raw in enumerate(data["cases"]):
        if not isinstance(raw, dict) or "request" not in raw or "expect" not in raw:
            raise CaseFileError(f"{path}: case {i + 1} needs `request` and `expect`")
        where = f"{path}:{raw.get('__line__', '?')}"
        request = _strip_lines(raw["request"])
        if isinstance(request, dict) and isinstance(request.get("certificate"), dict):
            # Certificate files are named relative to the case file, like signing keys.
            request["certificate"] = {k: os.path.join(os.path.dirname(path), str(v))
                                      for k, v in request["certificate"].items()}
        cases.append(Case(str(raw.get("name", f"case {i + 1}")), where, request, _strip_lines(raw["expect"])))
    return CaseFile(path, cases, keys)


def _mint(spec: dict, checked: Checked, keys: Keys, now: float) -> str:
    unknown = set(spec) - _TOKEN_FIELDS
    if unknown:
        raise CaseFileError(f"unknown token field(s): {', '.join(sorted(unknown))}")
    name = spec.get("issuer")
    if name not in checked.issuers:
        raise CaseFileError(f"token issuer `{name}` is not declared")
    issuer = checked.issuers[name]
    claims = {"iss": issuer.url, "iat": int(now), "exp": int(now) + int(spec.get("expires_in", 3600))}
    if issuer.audiences:
        claims["aud"] = issuer.audiences[0]
    if "not_before_in" in spec:
        claims["nbf"] = int(now) + int(spec["not_before_in"])
    claims.update(spec.get("claims", {}))
    if "pad" in spec:
        claims["pad"] = "x" * int(spec["pad"])
    claims = {k: v for k, v in claims.items() if v is not None}  # `exp: null` removes a default
    own = keys.for_issuer(checked, name)
    stranger = spec.get("signed_by") == "stranger"
    # A stranger signs under the issuer's kid, so that only the signature is wrong.
    kid = spec.get("kid", own.get("kid") if stranger else None)
    signer = keys.stranger if stranger else own
    if "header_text" in spec or "payload_text" in spec:
        return _mint_text(spec, claims, signer, kid)
    token = devtokens.mint(claims, signer, spec.get("alg"), kid)
    return devtokens.tampered(token, spec["tamper"]) if "tamper" in spec else token


def _mint_text(spec: dict, claims: dict, signer: dict, kid: str | None) -> str:
    """A token whose header or payload is JSON text as written: `$header` and `$claims` stand for
    the members the token would have had, and the text is UTF-8 except that U+DC80–U+DCFF stand
    for the single bytes 0x80–0xFF (Python's surrogateescape), so that invalid UTF-8 can be sent."""
    if {"alg", "tamper"} & set(spec):
        raise CaseFileError("`header_text` and `payload_text` are signed with the issuer's own alg, untampered")
    header = {"alg": signer["alg"], "typ": "JWT", "kid": kid or signer.get("kid")}
    texts = [(spec.get("header_text", "{$header}"), "$header", header),
             (spec.get("payload_text", "{$claims}"), "$claims", claims)]
    try:
        header_bytes, payload_bytes = (
            str(text).replace(placeholder, json.dumps(members)[1:-1]).encode("utf-8", "surrogateescape")
            for text, placeholder, members in texts)
    except UnicodeEncodeError as e:
        raise CaseFileError(f"token text: {e}") from None
    return devtokens.mint_text(header_bytes, payload_bytes, signer)


def _certificate(spec) -> ClientCertificate | None:
    """`certificate: {chain: file, key: file}`: a client certificate presented over TLS."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) != {"chain", "key"}:
        raise CaseFileError("a certificate is {chain: <PEM file>, key: <PEM file>}")
    return ClientCertificate(_text(spec["chain"]), _text(spec["key"]))


def build_request(spec: dict, checked: Checked, keys: Keys, now: float) -> RawRequest:
    """The raw request a case describes, with its token minted and placed as the case says."""
    spec = dict(spec)
    token_spec = spec.pop("token", None)
    certificate = _certificate(spec.pop("certificate", None))
    request = replace(RawRequest.from_dict(spec), certificate=certificate)
    if token_spec is None:
        return request
    token = _mint(token_spec, checked, keys, now)
    if token_spec.get("in", "header") == "query":
        separator = "&" if "?" in request.target else "?"
        return replace(request, target=f"{request.target}{separator}access_token={quote(token)}")
    header = ("authorization", f"{token_spec.get('scheme', 'Bearer')} {token}")
    return replace(request, headers=request.headers + (header,))


@dataclass(frozen=True)
class CaseResult:
    case: Case
    decisions: dict[str, Decision]  # protocol → its decision; none for a case that could not be built
    failures: tuple[str, ...]  # empty when the case passed

    @property
    def passed(self) -> bool:
        return not self.failures


def protocols(case: Case) -> tuple[str, ...]:
    """The protocols a case is decided over: the one its request names, or every one."""
    named = case.request.get("protocol") if isinstance(case.request, dict) else None
    return (named,) if named in PROTOCOLS else PROTOCOLS


def expectation(case: Case, protocol: str) -> dict:
    """What the case expects over `protocol`: its expectation, with that protocol's exceptions."""
    if not isinstance(case.expect, dict):
        return case.expect
    shared = {k: v for k, v in case.expect.items() if k not in PROTOCOLS}
    exceptions = case.expect.get(protocol, {})
    return {**shared, **exceptions} if isinstance(exceptions, dict) else {protocol: exceptions}


def compare(expect: dict, decision: Decision) -> tuple[str, ...]:
    """The differences between an expectation (status, rule, reason, …) and a decision."""
    got = {"status": decision.status, "rule": decision.rule, "reason": decision.reason,
           "service": decision.service, "enforced_status": decision.enforced_status,
           "grpc_status": decision.grpc_status}
    unknown = set(expect) - set(got)
    if unknown:
        return (f"unknown expectation(s): {', '.join(sorted(unknown))}",)
    return tuple(f"{k}: expected {expect[k]!r}, got {got[k]!r}" for k in expect if expect[k] != got[k])


def run_cases(checked: Checked, case_file: CaseFile, now: float | None = None) -> list[CaseResult]:
    from ..interpret import evaluate

    now = time.time() if now is None else now
    results = []
    for case in case_file.cases:
        try:
            request = build_request(case.request, checked, case_file.keys, now)
        except (CaseFileError, RequestError) as e:
            results.append(CaseResult(case, {}, (f"bad case: {e}",)))
            continue
        decisions = {protocol: evaluate(checked, replace(request, protocol=protocol), now,
                                         keys=case_file.keys.published(checked)) for protocol in protocols(case)}
        failures = tuple(f"{protocol}: {failure}" if len(decisions) > 1 else failure
                         for protocol, decision in decisions.items()
                         for failure in compare(expectation(case, protocol), decision))
        results.append(CaseResult(case, decisions, failures))
    return results
