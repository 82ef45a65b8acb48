"""A stand-in for the parts of Envoy's Lua stream handle that policyc's scripts use, run on LuaJIT
2.1 through lupa, so the emitted scripts can be tested in process.

Each behaviour below was observed on Envoy 1.40 (/work/shared/research/envoy-lab.md §1-§3):

- `handle:headers()`: `get(name)` matches names case-insensitively and returns the values of a
  repeated header joined with ","; nil when absent. `getNumValues(name)` counts the values (0 when
  absent). `getAtIndex(name, i)` counts from 0; nil out of range.
- `handle:streamInfo():dynamicMetadata()`: `get(ns)` returns a fresh Lua table converted from the
  namespace's JSON as Envoy converts a protobuf Struct: objects → tables with string keys, arrays →
  tables indexed from 1, numbers → doubles (2^53+1 arrives as 2^53), and a JSON null → nil (a hole
  in an array, an absent key in an object); nil for an unknown namespace. `set(ns, key, value)` is
  recorded (and later `get`s of that namespace see it).
- `handle:streamInfo():downstreamDirectRemoteAddress()`: "a.b.c.d:port" or "[v6]:port", the
  address as glibc's inet_ntop writes it. An IPv4-mapped peer arrives unmapped, as IPv4 (see
  policyc/semantics/net.py).
- `handle:streamInfo():downstreamSslConnection()`: nil on a plain connection, else the TLS
  connection: `peerCertificatePresented()` and `peerCertificateValidated()` are booleans,
  `uriSanPeerCertificate()` and `dnsSansPeerCertificate()` tables of strings indexed from 1 (empty
  without a certificate), `subjectPeerCertificate()` the subject as RFC 2253 text ("" without one).
- `handle:respond(headers, body)`: needs a `:status` from 200 to 599 (else a script error), records
  the response and then **yields the request's coroutine, which is never resumed**. That is what
  Envoy does: the filter runs `envoy_on_request` in a coroutine and `respond` is a yield point, so
  nothing after it runs, not even the rest of an enclosing `pcall` (LuaJIT yields across pcall).
  A stand-in that raised an error instead would be caught by the scripts' own `pcall` and change
  what they record, so this one yields exactly as Envoy does.
- `logErr`, `logWarn`, `logInfo`, `logDebug`: recorded as (level, message).
- An error that escapes `envoy_on_request` is recorded as `Outcome.error`. Envoy logs it and lets
  the request through (fail-open), so `Outcome.status` is then None.
- Globals persist between requests in one state (Envoy keeps one state per worker): `ScriptState`
  reuses one state, `run_script` makes a fresh one per request.

Envoy's objects are userdata: they have no fields to set or iterate, and a method called with `.`
instead of `:` fails. The stand-in's objects refuse the same, so emission mistakes show up here.
Faults can be injected by method (`Request.faults`, e.g. "dynamicMetadata:get"; see FAULT_POINTS): the call
then raises, to prove that the scripts fail closed wherever Envoy's API might fail.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lupa.luajit21 as lupa

from policyc.semantics.peer import Peer

JWT_NAMESPACE = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "jwt_payload"
POLICY_NAMESPACE = "policyc"

# Every method of the handle's objects, as a fault can name it.
FAULT_POINTS = ("handle:headers", "handle:streamInfo", "handle:respond", "handle:logErr", "headers:get",
                "headers:getNumValues", "headers:getAtIndex", "streamInfo:dynamicMetadata",
                "streamInfo:downstreamDirectRemoteAddress", "dynamicMetadata:get", "dynamicMetadata:set")
# The TLS connection's methods, reached only by scripts with peer atoms.
SSL_FAULT_POINTS = ("streamInfo:downstreamSslConnection", "ssl:peerCertificatePresented",
                    "ssl:peerCertificateValidated", "ssl:uriSanPeerCertificate", "ssl:dnsSansPeerCertificate",
                    "ssl:subjectPeerCertificate")


@dataclass(frozen=True)
class Request:
    """A request as the Lua filter sees it: headers after the codec and the HCM (pseudo-headers
    included, lower-case names, in arrival order), the direct peer, the dynamic metadata earlier
    filters left (namespace → JSON object), the faults to inject, and the TLS connection: None for
    plain HTTP, else {"presented", "validated", "uri", "dns", "subject"} of the client certificate."""

    headers: tuple[tuple[str, str], ...]
    peer: str = "127.0.0.1:40000"
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    faults: frozenset[str] = frozenset()
    ssl: Mapping[str, Any] | None = None


def peer_address(ip: str, port: int = 40000) -> str:
    """`downstreamDirectRemoteAddress()` for a peer: inet_ntop's text, IPv6 in brackets, with the
    port. An IPv4-mapped IPv6 peer is given as the IPv4 address, as Envoy hands it to filters."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.version == 4:
        return f"{socket.inet_ntop(socket.AF_INET, address.packed)}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, address.packed)}]:{port}"


def envoy_request(method: str, path: str, headers=(), *, authority: str = "service.test", source: str = "127.0.0.1",
                  claims: Mapping[str, Any] | None = None, metadata: Mapping[str, Mapping[str, Any]] | None = None,
                  faults=(), peer: Peer | None = None) -> Request:
    """A request as Envoy's filters see it: `path` is the whole `:path` (query included), `headers`
    are (name, value) pairs after the codec; `claims` are a verified token's, placed where
    jwt_authn puts them (`payload_in_metadata: jwt_payload`); `peer` is the verified client
    certificate of a TLS connection (None: a TLS connection without one)."""
    pseudo = ((":authority", authority), (":path", path), (":method", method), (":scheme", "http"))
    added = (("x-forwarded-proto", "http"), ("x-request-id", "5f1d0c9e-0000-4000-8000-000000000000"))
    all_metadata = dict(metadata or {})
    if claims is not None:
        all_metadata[JWT_NAMESPACE] = {**all_metadata.get(JWT_NAMESPACE, {}), PAYLOAD_KEY: claims}
    lowered = tuple((name.lower(), value) for name, value in headers)
    return Request(pseudo + lowered + added, peer_address(source) if _is_ip(source) else source, all_metadata,
                   frozenset(faults), ssl_view(peer))


def ssl_view(peer: Peer | None) -> dict:
    """The TLS connection as the Lua filter sees it, with a verified peer or without a certificate."""
    if peer is None:
        return {"presented": False, "validated": False}
    return {"presented": True, "validated": True, "uri": list(peer.uris), "dns": list(peer.dns),
            "subject": peer.subject}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: str | None


@dataclass
class Outcome:
    """What one request came to: the local reply (None: the request goes on upstream), the
    dynamic metadata the script set (namespace → key → value), its log lines, and an error that
    escaped the script (Envoy logs it and lets the request through)."""

    status: int | None
    metadata: dict[str, dict[str, Any]]
    logs: list[tuple[str, str]]
    response: Response | None = None
    error: str | None = None

    @property
    def decision(self) -> str | None:
        return self.metadata.get(POLICY_NAMESPACE, {}).get("decision")

    @property
    def rule(self) -> str | None:
        return self.metadata.get(POLICY_NAMESPACE, {}).get("rule")

    @property
    def service(self) -> str | None:
        return self.metadata.get(POLICY_NAMESPACE, {}).get("service")


# The handle, built in Lua so that `respond` can yield the request's coroutine. Loaded once per
# state; it defines no globals. Called with (script source) → function(spec) → record.
_HANDLE_LUA = r"""
local source = ...
local script, problem = loadstring(source, "=policy.lua")
if script == nil then
  error("script load error: " .. problem, 0)
end
script()  -- top level, as Envoy runs it once per worker state
local on_request = envoy_on_request  -- Envoy takes its reference to the function at load
if type(on_request) ~= "function" then
  error("the script defines no envoy_on_request", 0)
end

local function copy(value)
  if type(value) ~= "table" then
    return value
  end
  local out = {}
  for k, v in pairs(value) do
    out[k] = copy(v)
  end
  return out
end

local function checkstring(value, what)
  if type(value) == "number" then
    return tostring(value)
  end
  if type(value) ~= "string" then
    error("bad argument " .. what .. " (string expected, got " .. type(value) .. ")", 3)
  end
  return value
end

-- An object like Envoy's userdata: methods only, no fields to read, set or iterate, and a method
-- called on anything but the object itself fails.
local function object(kind, methods, faults)
  local self = {}
  local index = {}
  for name, method in pairs(methods) do
    local point = kind .. ":" .. name
    index[name] = function(this, ...)
      if this ~= self then
        error("calling " .. point .. " on something else than the object (use ':')", 2)
      end
      if faults[point] then
        error("injected fault in " .. point, 0)
      end
      return method(...)
    end
  end
  setmetatable(self, {
    __index = function(_, key)
      local method = index[key]
      if method == nil then
        error(kind .. " has no method " .. tostring(key), 2)
      end
      return method
    end,
    __newindex = function(_, key)
      error("cannot set " .. tostring(key) .. " on " .. kind, 2)
    end,
    __metatable = kind,
  })
  return self
end

local function new_handle(spec, record)
  local faults = spec.faults
  local names, values = {}, {}
  for i = 1, #spec.headers do
    names[i], values[i] = spec.headers[i][1]:lower(), spec.headers[i][2]
  end
  local function values_of(name)
    name = checkstring(name, "#1 (header name)"):lower()
    local found = {}
    for i = 1, #names do
      if names[i] == name then
        found[#found + 1] = values[i]
      end
    end
    return found
  end

  local headers = object("headers", {
    get = function(name)
      local found = values_of(name)
      if #found == 0 then
        return nil
      end
      return table.concat(found, ",")
    end,
    getNumValues = function(name)
      return #values_of(name)
    end,
    getAtIndex = function(name, index)
      if type(index) ~= "number" or index ~= math.floor(index) then
        error("bad argument #2 to 'getAtIndex' (integer expected)", 3)
      end
      return values_of(name)[index + 1]
    end,
  }, faults)

  local namespaces = copy(spec.metadata)
  local metadata = object("dynamicMetadata", {
    get = function(namespace)
      return copy(namespaces[checkstring(namespace, "#1 (filter name)")])
    end,
    set = function(namespace, key, value)
      namespace = checkstring(namespace, "#1 (filter name)")
      key = checkstring(key, "#2 (key)")
      local kind = type(value)
      if kind ~= "string" and kind ~= "number" and kind ~= "boolean" and kind ~= "table" then
        error("unexpected type '" .. kind .. "' in dynamicMetadata:set", 3)
      end
      namespaces[namespace] = namespaces[namespace] or {}
      namespaces[namespace][key] = copy(value)
      record.metadata[namespace] = record.metadata[namespace] or {}
      record.metadata[namespace][key] = copy(value)
    end,
  }, faults)

  local ssl = nil
  if spec.ssl ~= nil then
    ssl = object("ssl", {
      peerCertificatePresented = function() return spec.ssl.presented == true end,
      peerCertificateValidated = function() return spec.ssl.validated == true end,
      uriSanPeerCertificate = function() return copy(spec.ssl.uri or {}) end,
      dnsSansPeerCertificate = function() return copy(spec.ssl.dns or {}) end,
      subjectPeerCertificate = function() return spec.ssl.subject or "" end,
    }, faults)
  end

  local stream_info = object("streamInfo", {
    dynamicMetadata = function() return metadata end,
    downstreamDirectRemoteAddress = function() return spec.peer end,
    downstreamSslConnection = function() return ssl end,
  }, faults)

  local function log(level)
    return function(message)
      record.logs[#record.logs + 1] = { level, checkstring(message, "#1 (message)") }
    end
  end

  return object("handle", {
    headers = function() return headers end,
    streamInfo = function() return stream_info end,
    respond = function(response_headers, body)
      if type(response_headers) ~= "table" then
        error("bad argument #1 to 'respond' (table expected)", 3)
      end
      local out = {}
      for k, v in pairs(response_headers) do
        out[checkstring(k, "(header name)")] = checkstring(v, "(header value)")
      end
      local status = tonumber(out[":status"])
      if status == nil or status < 200 or status > 599 then
        error(":status must be between 200-599", 3)
      end
      if body ~= nil then
        body = checkstring(body, "#2 (body)")
      end
      record.response = { status = status, headers = out, body = body }
      coroutine.yield()  -- never resumed: the request ends here
      error("the stand-in resumed a request after respond")
    end,
    logErr = log("error"),
    logWarn = log("warning"),
    logInfo = log("info"),
    logDebug = log("debug"),
  }, faults)
end

return function(spec)
  local record = { logs = {}, metadata = {} }
  local co = coroutine.create(on_request)
  local ok, problem = coroutine.resume(co, new_handle(spec, record))
  if not ok then
    record.error = tostring(problem)
  elseif coroutine.status(co) == "suspended" and record.response == nil then
    record.error = "envoy_on_request yielded without responding"
  end
  return record
end
"""

# Walks everything the script's function can reach (upvalues, tables, metatables) and writes it
# down, so that two walks compare equal when no request changed any state the script keeps.
_FINGERPRINT_LUA = r"""
local root = ...
local seen, lines, counter = {}, {}, 0
local function label(value)
  local kind = type(value)
  if kind == "string" then
    return string.format("%q", value)
  elseif kind == "number" or kind == "boolean" or kind == "nil" then
    return tostring(value)
  end
  return kind
end
local walk
local function visit(path, value)
  local kind = type(value)
  if kind ~= "table" and kind ~= "function" then
    lines[#lines + 1] = path .. " = " .. label(value)
    return
  end
  if seen[value] then
    lines[#lines + 1] = path .. " = " .. seen[value]
    return
  end
  counter = counter + 1
  seen[value] = kind .. "#" .. counter
  lines[#lines + 1] = path .. " = " .. seen[value]
  walk(path, value)
end
walk = function(path, value)
  if type(value) == "function" then
    local i = 1
    while true do
      local name, up = debug.getupvalue(value, i)
      if name == nil then break end
      visit(path .. "^" .. name, up)
      i = i + 1
    end
    return
  end
  local keys = {}
  for k in pairs(value) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) ~= type(b) then return type(a) < type(b) end
    if type(a) == "number" or type(a) == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  for _, k in ipairs(keys) do
    visit(path .. "[" .. label(k) .. "]", value[k])
  end
  local meta = debug.getmetatable(value)
  if meta ~= nil then
    visit(path .. "<meta>", meta)
  end
end
visit("envoy_on_request", root)
return table.concat(lines, "\n")
"""


def to_lua(runtime, value, top: bool = True):
    """A JSON value as Envoy hands it to Lua: strings as UTF-8 bytes, numbers as doubles, arrays
    indexed from 1 with a hole for each null, objects without their null members."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return value
    table = runtime.table()
    if isinstance(value, Mapping):
        for key, item in value.items():
            if item is not None:
                table[key.encode("utf-8", "surrogatepass")] = to_lua(runtime, item, False)
        return table
    if isinstance(value, list | tuple):
        for i, item in enumerate(value, 1):
            if item is not None:
                table[i] = to_lua(runtime, item, False)
        return table
    if isinstance(value, set | frozenset):
        for item in value:
            table[to_lua(runtime, item, False)] = True
        return table
    raise TypeError(f"no Lua form for {type(value).__name__}")


def from_lua(value):
    """A Lua value back in Python: strings decoded from UTF-8 (bytes when they are not UTF-8),
    tables with keys 1..n as lists, other tables as dicts."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if lupa.lua_type(value) == "table":
        items = {from_lua(k): from_lua(v) for k, v in value.items()}
        if items and set(items) == set(range(1, len(items) + 1)):
            return [items[i] for i in range(1, len(items) + 1)]
        return items
    if lupa.lua_type(value) is not None:
        return lupa.lua_type(value)  # a function or userdata: only its kind is comparable
    return value


def new_runtime():
    """A fresh LuaJIT state. Strings cross as bytes (encoding=None), so no text is re-encoded."""
    return lupa.LuaRuntime(encoding=None, register_eval=False, register_builtins=False,
                           unpack_returned_tuples=True)


class ScriptState:
    """One LuaJIT state with a script loaded, as an Envoy worker holds it: requests run one after
    another in the same state, and globals persist between them."""

    def __init__(self, source: str):
        self.runtime = new_runtime()
        self._baseline_globals = self.globals()
        loader = self.runtime.execute(b"return function(...) " + _HANDLE_LUA.encode() + b" end")
        self._run = loader(source.encode("utf-8", "surrogatepass"))
        self._fingerprint = self.runtime.execute(b"return function(...) " + _FINGERPRINT_LUA.encode() + b" end")

    def run(self, request: Request) -> Outcome:
        spec = self.runtime.table()
        spec[b"headers"] = to_lua(self.runtime, [list(pair) for pair in request.headers])
        spec[b"peer"] = request.peer.encode()
        spec[b"metadata"] = to_lua(self.runtime, dict(request.metadata))
        spec[b"faults"] = to_lua(self.runtime, set(request.faults))
        spec[b"ssl"] = to_lua(self.runtime, request.ssl)
        record = self._run(spec)
        response = None
        if record[b"response"] is not None:
            raw = record[b"response"]
            response = Response(int(raw[b"status"]), from_lua(raw[b"headers"]), from_lua(raw[b"body"]))
        logs = [tuple(entry) for entry in from_lua(record[b"logs"]) or []]
        metadata = from_lua(record[b"metadata"]) or {}
        error = from_lua(record[b"error"])
        return Outcome(response.status if response else None, metadata, logs, response, error)

    def globals(self) -> set[str]:
        """The names of the state's globals."""
        names = self.runtime.execute(b"local t = {} for k in pairs(_G) do t[#t + 1] = tostring(k) end return t")
        return {from_lua(v) for v in names.values()}

    def added_globals(self) -> set[str]:
        """The globals the script (and every request since) added to a fresh state."""
        return self.globals() - self._baseline_globals

    def fingerprint(self) -> str:
        """Everything `envoy_on_request` can reach, written down: equal before and after requests
        when no request left state behind."""
        root = self.runtime.globals()[b"envoy_on_request"]
        return self._fingerprint(root).decode("utf-8", "backslashreplace")


def run_script(source: str, request: Request) -> Outcome:
    """Loads `source` into a fresh LuaJIT state and runs `envoy_on_request` on `request`."""
    return ScriptState(source).run(request)
