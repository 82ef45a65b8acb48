"""`policyc eval`'s input: one request, or a batch as JSON lines, each with its caller given
directly instead of a token or certificate made beforehand (docs/eval.md has the schema).

A caller is decided by the code that decides every request, on what Envoy would receive from it,
so that eval cannot decide it otherwise than Envoy does:
- `issuer` and `claims` become a token in `Authorization: Bearer`, signed by a key made up for the
  run and published, for that request only, as the issuer's JWKS. The signature is taken as
  valid; every other check of jwt_authn applies (semantics/tokens.py), to the payload as
  semantics/tokenjson.py reads it back. `iss` is the issuer's url; `iat` is the evaluation time,
  `exp` an hour later and `aud` the issuer's first audience, unless the claims give them.
- `certificate` becomes a client certificate with those names, issued by a CA made up for the run
  and standing in for the named trust's, valid at the evaluation time: its chain and validity are
  taken as valid, and its names are read back as the listener reads them (the subject as RFC 2253
  text). Over h2c, which has no TLS handshake, it is not presented.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field, replace
from difflib import get_close_matches

import yaml
from cryptography import x509

from ..checked import Checked
from ..credentials import certs as devcerts
from ..credentials import tokens as devtokens
from ..semantics.peer import ClientCertificate, subject_name
from ..semantics.request import RawRequest

TOKEN_LIFETIME = 3600  # seconds from the evaluation time to a token's default `exp`
_CALLER_FIELDS = ("issuer", "claims", "certificate")
_CERTIFICATE_FIELDS = ("trust", "uri", "dns", "subject")


class InputError(ValueError):
    """Input that is not of the documented shape, or names what the policies do not declare."""


@dataclass(frozen=True)
class Certificate:
    """A client certificate by its names; `trust` None means the only trust declared."""

    trust: str | None = None
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    subject: str = ""


@dataclass(frozen=True)
class Caller:
    """Who sends a request: a token's issuer and claims, a client certificate, or both."""

    issuer: str | None = None
    claims: dict = field(default_factory=dict)
    certificate: Certificate | None = None


@dataclass(frozen=True)
class Entry:
    """One request as read: where it stands (file, or file:line in a batch) and its JSON value,
    or the located problem that kept it from being read."""

    where: str
    data: object = None
    problem: str | None = None


@dataclass(frozen=True)
class Built:
    """A request ready to decide, with the stand-in keys and CAs its caller needs."""

    request: RawRequest
    keys: dict[str, dict]
    trusts: dict[str, tuple[x509.Certificate, ...]]


# ---------------------------------------------------------------- reading


def _object(pairs: list[tuple[str, object]]) -> dict:
    # A repeated key is refused, as Envoy refuses it in a token: no silent last-one-wins.
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"key `{key}` repeated")
        found[key] = value
    return found


def _not_json(name: str):
    raise ValueError(f"`{name}` is not JSON")


def _loads(text: str):
    return json.loads(text, object_pairs_hook=_object, parse_constant=_not_json)


def _json_problem(name: str, error: Exception, line: int | None = None) -> str:
    """Where and what: `name:line:column: problem`; `line` is the line of a batch's request."""
    if isinstance(error, json.JSONDecodeError):
        return f"{name}:{line or error.lineno}:{error.colno}: {error.msg}"
    where = f"{name}:{line}" if line else name
    return f"{where}: nested too deeply" if isinstance(error, RecursionError) else f"{where}: {error}"


def read_entries(text: str, name: str, as_yaml: bool = False) -> tuple[list[Entry], bool]:
    """The requests `text` holds, in order, and whether it is a batch: one JSON (or YAML)
    document, or JSON lines, one request per non-blank line."""
    if not text.strip():
        return [Entry(name, problem=f"{name}: no request")], False
    if as_yaml:
        try:
            return [Entry(name, yaml.safe_load(text))], False
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
            return [Entry(name, problem=f"{where}: {getattr(error, 'problem', None) or error}")], False
        except RecursionError:
            return [Entry(name, problem=f"{name}: nested too deeply")], False
    try:
        return [Entry(name, _loads(text))], False
    except (ValueError, RecursionError) as whole:
        lines = [(number, line) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
        if not _is_json(lines[0][1]):  # not JSON lines: one document, and a wrong one
            return [Entry(name, problem=_json_problem(name, whole))], False
    entries = []
    for number, line in lines:
        try:
            entries.append(Entry(f"{name}:{number}", _loads(line)))
        except (ValueError, RecursionError) as error:
            entries.append(Entry(f"{name}:{number}", problem=_json_problem(name, error, number)))
    return entries, True


def _is_json(line: str) -> bool:
    try:
        _loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def caller_from_json(data: object) -> Caller:
    """A request's `caller`: `{"issuer", "claims", "certificate": {"trust", "uri", "dns", "subject"}}`."""
    _known_fields(data, _CALLER_FIELDS, "caller")
    issuer, claims, certificate = data.get("issuer"), data.get("claims", {}), data.get("certificate")
    if issuer is not None and not isinstance(issuer, str):
        raise InputError("caller issuer must be a string: an issuer's name")
    if not isinstance(claims, dict):
        raise InputError("caller claims must be an object")
    return Caller(issuer, claims, None if certificate is None else _certificate(certificate))


def _certificate(data: object) -> Certificate:
    _known_fields(data, _CERTIFICATE_FIELDS, "caller certificate")
    trust, subject = data.get("trust"), data.get("subject", "")
    if trust is not None and not isinstance(trust, str):
        raise InputError("caller certificate trust must be a string: a trust's name")
    if not isinstance(subject, str):
        raise InputError("caller certificate subject must be a string, such as `CN=deploy-bot,O=CI`")
    return Certificate(trust, _names(data.get("uri", []), "uri"), _names(data.get("dns", []), "dns"), subject)


def _names(value: object, name: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InputError(f"caller certificate {name} must be a string or a list of strings")
    return tuple(values)


def _known_fields(data: object, known: tuple[str, ...], what: str) -> None:
    if not isinstance(data, dict):
        raise InputError(f"{what} is an object with {', '.join(known)}")
    unknown = set(data) - set(known)
    if unknown:
        raise InputError(f"unknown {what} field(s): {', '.join(sorted(map(str, unknown)))}")


# ---------------------------------------------------------------- building


class StandIns:
    """The keys and CAs made up for one run (one per issuer and per trust), and the requests
    built with them, all at one evaluation time."""

    def __init__(self, checked: Checked, now: float):
        self.checked, self.now = checked, now
        self._keys: dict[str, dict] = {}
        self._cas: dict[str, devcerts.Issued] = {}
        self._presented: dict[tuple[str, Certificate], ClientCertificate] = {}

    def build(self, data: object, given: Caller | None = None) -> Built:
        """The request `data` describes, its caller (in it, or `given` for every request)
        turned into a token and a certificate. RequestError or InputError when it is not valid."""
        caller = None
        if isinstance(data, dict) and "caller" in data:
            data = dict(data)
            caller = caller_from_json(data.pop("caller"))
            if given is not None:
                raise InputError("the caller is given both in the request and on the command line")
        caller = caller or given
        request = RawRequest.from_dict(data)
        keys, trusts = {}, {}
        if caller is not None and (caller.issuer is not None or caller.claims):
            request, keys = self._with_token(request, caller)
        if caller is not None and caller.certificate is not None:
            request, trusts = self._with_certificate(request, caller.certificate)
        return Built(request, keys, trusts)

    def _with_token(self, request: RawRequest, caller: Caller) -> tuple[RawRequest, dict[str, dict]]:
        if caller.issuer is None:
            raise InputError("claims need the issuer of their token")
        issuer = self.checked.issuers.get(caller.issuer)
        if issuer is None:
            raise InputError(_unknown("issuer", caller.issuer, self.checked.issuers))
        if "iss" in caller.claims:
            raise InputError("`iss` is the issuer's url: name the issuer instead")
        if any(name.lower() == "authorization" for name, _ in request.headers):
            raise InputError("the request has an Authorization header, where the caller's token goes")
        defaults = {"iss": issuer.url, "iat": int(self.now), "exp": int(self.now) + TOKEN_LIFETIME}
        if issuer.audiences:
            defaults["aud"] = issuer.audiences[0]
        if issuer.name not in self._keys:
            self._keys[issuer.name] = devtokens.generate_key("ES256")
        key = self._keys[issuer.name]
        header = json.dumps({"alg": key["alg"], "typ": "JWT", "kid": key["kid"]}).encode()
        token = devtokens.mint_text(header, _payload({**defaults, **caller.claims}), key)
        headers = request.headers + (("authorization", f"Bearer {token}"),)
        return replace(request, headers=headers), {issuer.name: devtokens.public_jwks(key)}

    def _with_certificate(self, request: RawRequest, certificate: Certificate) -> tuple[RawRequest, dict]:
        trust = self._trust(certificate.trust)
        if (trust, certificate) not in self._presented:
            uris = _sans(certificate.uris, x509.UniformResourceIdentifier, "uri")
            dns = _sans(certificate.dns, x509.DNSName, "dns")
            subject = _subject(certificate.subject)
            start = self._valid_from()
            leaf = devcerts.issue(self._ca(trust, start), "", uris, dns, subject=subject, valid_from=start,
                                  valid_days=2)
            self._presented[trust, certificate] = ClientCertificate(leaf.cert_pem, leaf.key_pem)
        presented = self._presented[trust, certificate]
        return replace(request, certificate=presented), {trust: (self._cas[trust].certificate,)}

    def _trust(self, name: str | None) -> str:
        declared = self.checked.trusts
        if name is None and len(declared) == 1:
            return next(iter(declared))
        if not declared:
            raise InputError("the policies declare no `trust`: the listener asks for no client certificate")
        if name is None:
            raise InputError(f"name the trust whose CA issued the certificate: one of {', '.join(sorted(declared))}")
        if name not in declared:
            raise InputError(_unknown("trust", name, declared))
        return name

    def _ca(self, trust: str, valid_from: datetime.datetime) -> devcerts.Issued:
        if trust not in self._cas:
            self._cas[trust] = devcerts.make_ca(f"policyc eval stand-in for trust {trust}", valid_from, valid_days=2)
        return self._cas[trust]

    def _valid_from(self) -> datetime.datetime:
        """A day before the evaluation time: certificates are valid from then for two days."""
        try:
            start = datetime.datetime.fromtimestamp(self.now, datetime.UTC) - devcerts.DAY
        except (ValueError, OverflowError, OSError):
            start = None
        # X.509 validity holds the years 1950 to 9999 (UTCTime, then GeneralizedTime).
        if start is None or not 1950 <= start.year <= 9998:
            raise InputError("a certificate cannot be valid at that time: give --now between the years 1950 and 9998")
        return start


def _payload(claims: dict) -> bytes:
    try:
        return json.dumps(claims, allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise InputError(f"claims hold a value JSON cannot: {error}") from None
    except RecursionError:
        raise InputError("claims nested too deeply") from None


def _sans(names: tuple[str, ...], kind: type, what: str) -> list[str]:
    for name in names:
        try:
            kind(name)
        except ValueError:
            raise InputError(f"certificate {what} `{name}` is not ASCII: a certificate holds IDNA "
                             "A-labels and percent-encoded URIs") from None
    return list(names)


def _subject(text: str) -> x509.Name:
    try:
        return subject_name(text)
    except ValueError:
        raise InputError(f"certificate subject `{text}` is not RFC 4514 text, such as `CN=deploy-bot,O=CI`") from None


def _unknown(kind: str, name: str, declared) -> str:
    close = get_close_matches(name, sorted(declared), n=1)
    if close:
        return f"no {kind} is named `{name}`; did you mean `{close[0]}`?"
    return f"no {kind} is named `{name}`" + (f" (declared: {', '.join(sorted(declared))})" if declared else "")
