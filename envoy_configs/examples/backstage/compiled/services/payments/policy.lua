-- policyc: service "payments". Generated: edit the .policy files instead.
local values = (function()
-- Whether any of several values passes a test: the atoms that hold when one value does (a header
-- sent several times, the networks of `source in`, the names a client certificate carries) share
-- this loop. Values are tried in order, and each is read only once those before it have failed.
-- Loaded first (RUNTIME_MODULES in policyc/backends/lua.py), so the other modules use it by name.
local M = {}

-- Whether test(read(source, key, i), argument) is true for some i from 1 to count.
function M.any(count, read, source, key, test, argument)
  for i = 1, count do
    if test(read(source, key, i), argument) then
      return true
    end
  end
  return false
end

local function element(list, _, i)
  return list[i]
end

-- Whether test(value, argument) is true for some value of the list.
function M.any_element(list, test, argument)
  return M.any(#list, element, list, nil, test, argument)
end

return M
end)()
local glob = (function()
-- Path globs (mirrors policyc/semantics/glob.py). A compiled pattern is an array of segments;
-- a segment is the marker ANY (`**`) or an array of literal pieces that `*`s stand between.
-- `**` segments cut a pattern into groups of plain segments: the first group matches the path's
-- first segments, the last group its last ones, and each group between is taken at its leftmost
-- place after the one before, so no choice is ever revisited (bench/worst_case.py measures it).
local M = {}

M.ANY = {}

-- "a*b" -> {"a", "b"}; "*" -> {"", ""}; "abc" -> {"abc"}
local function segment_matches(pieces, segment)
  local n = #pieces
  if n == 1 then
    return segment == pieces[1]
  end
  local first, last = pieces[1], pieces[n]
  if #segment < #first + #last then
    return false
  end
  if segment:sub(1, #first) ~= first or segment:sub(#segment - #last + 1) ~= last then
    return false
  end
  local position, stop = #first + 1, #segment - #last
  for i = 2, n - 1 do
    local piece = pieces[i]
    if #piece > 0 then
      local s, e = segment:find(piece, position, true)
      if s == nil or e > stop then
        return false
      end
      position = e + 1
    end
  end
  return true
end

-- The path's segments as Python's str.split("/") gives them (empty strings included).
function M.split(path)
  local segments, start = {}, 1
  while true do
    local slash = path:find("/", start, true)
    if slash == nil then
      segments[#segments + 1] = path:sub(start)
      return segments
    end
    segments[#segments + 1] = path:sub(start, slash - 1)
    start = slash + 1
  end
end

-- Whether pattern[from..to] (no ANY among them) matches the segments from index `at` on.
local function group_at(pattern, from, to, segments, at)
  for k = 0, to - from do
    if not segment_matches(pattern[from + k], segments[at + k]) then
      return false
    end
  end
  return true
end

function M.match(pattern, segments)
  local np, ni = #pattern, #segments
  local first_any, last_any = 0, 0
  for p = 1, np do
    if pattern[p] == M.ANY then
      if first_any == 0 then
        first_any = p
      end
      last_any = p
    end
  end
  if first_any == 0 then
    return np == ni and group_at(pattern, 1, np, segments, 1)
  end
  local head, tail = first_any - 1, np - last_any
  local stop = ni - tail -- the last segment middle groups may use
  if stop < head or not group_at(pattern, 1, head, segments, 1)
      or not group_at(pattern, last_any + 1, np, segments, stop + 1) then
    return false
  end
  local at, p = head + 1, first_any + 1
  while p < last_any do
    if pattern[p] == M.ANY then
      p = p + 1
    else
      local q = p
      while pattern[q + 1] ~= M.ANY do
        q = q + 1
      end
      local size = q - p + 1
      while at + size - 1 <= stop and not group_at(pattern, p, q, segments, at) do
        at = at + 1
      end
      if at + size - 1 > stop then
        return false
      end
      at, p = at + size, q + 1
    end
  end
  return true
end

return M
end)()
local net = (function()
-- CIDR matching on the direct peer (mirrors policyc/semantics/net.py). Addresses and networks
-- are arrays of byte values: 4 for IPv4, 16 for IPv6. An IPv4-mapped IPv6 peer is compared as IPv4.
local M = {}

local function ipv4_bytes(text)
  local a, b, c, d = text:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if a == nil then
    return nil
  end
  local out = { tonumber(a), tonumber(b), tonumber(c), tonumber(d) }
  for i = 1, 4 do
    if out[i] > 255 then
      return nil
    end
  end
  return out
end

local function hex_groups(text, out)
  if text == "" then
    return true
  end
  for group in (text .. ":"):gmatch("([^:]*):") do
    if not group:match("^%x%x?%x?%x?$") then
      return false
    end
    local value = tonumber(group, 16)
    out[#out + 1] = math.floor(value / 256)
    out[#out + 1] = value % 256
  end
  return true
end

local function ipv6_bytes(text)
  local head, tail = text, nil
  local gap = text:find("::", 1, true)
  if gap then
    head, tail = text:sub(1, gap - 1), text:sub(gap + 2)
  end
  local v4 = nil
  local last = tail or head
  local dotted = last:match("([%d%.]+)$")
  if dotted and dotted:find(".", 1, true) then
    v4 = ipv4_bytes(dotted)
    if v4 == nil then
      return nil
    end
    last = last:sub(1, #last - #dotted)
    if last ~= "" then
      -- The quad must follow a colon that ends a group: "::a1.2.3.4" and "1:::1.2.3.4" are not
      -- addresses, and dropping just any last character read them as "::a:1.2.3.4" and "1::1.2.3.4".
      if last:sub(-1) ~= ":" or last == ":" then
        return nil
      end
      last = last:sub(1, -2)
    end
    if tail then tail = last else head = last end
  end
  local front, back = {}, {}
  if not hex_groups(head, front) or not hex_groups(tail or "", back) then
    return nil
  end
  if v4 then
    for i = 1, 4 do back[#back + 1] = v4[i] end
  end
  local missing = 16 - #front - #back
  if missing < 0 or (tail == nil and missing ~= 0) or (tail ~= nil and missing < 2) then
    return nil
  end
  local out = front
  for _ = 1, missing do out[#out + 1] = 0 end
  for i = 1, #back do out[#out + 1] = back[i] end
  return out
end

-- "10.1.2.3:5678" or "[::1]:5678" -> bytes of the address, IPv4-mapped IPv6 unmapped.
function M.peer_bytes(address)
  local v6 = address:match("^%[(.*)%]:%d+$")
  if v6 == nil then
    return ipv4_bytes(address:match("^(.*):%d+$") or address)
  end
  local bytes = ipv6_bytes(v6)
  if bytes == nil then
    return nil
  end
  for i = 1, 10 do
    if bytes[i] ~= 0 then return bytes end
  end
  if bytes[11] == 255 and bytes[12] == 255 then
    return { bytes[13], bytes[14], bytes[15], bytes[16] }
  end
  return bytes
end

-- network: { bytes = {...}, length = prefix length }
function M.contains(network, bytes)
  local prefix = network.bytes
  if #prefix ~= #bytes then
    return false
  end
  local full = math.floor(network.length / 8)
  for i = 1, full do
    if prefix[i] ~= bytes[i] then
      return false
    end
  end
  local rest = network.length % 8
  if rest == 0 then
    return true
  end
  local mask = bit.band(bit.lshift(0xFF, 8 - rest), 0xFF)
  return bit.band(prefix[full + 1], mask) == bit.band(bytes[full + 1], mask)
end

function M.any_contains(networks, bytes)
  return bytes ~= nil and values.any_element(networks, M.contains, bytes)
end

return M
end)()
local request = (function()
-- The request as the policy sees it, built once per request (mirrors the interpreter's Context):
-- method, normalized path without the query, headers value by value, the direct peer, and the
-- claims of a verified token. Anything unexpected raises, and the caller answers 403.
local M = {}

local JWT_FILTER = "envoy.filters.http.jwt_authn"

function M.new(handle, payload_key)
  local headers = handle:headers()
  local path = headers:get(":path")
  local method = headers:get(":method")
  if type(path) ~= "string" or type(method) ~= "string" then
    error("request without :path or :method")
  end
  local query = path:find("?", 1, true)
  local q = {
    handle = handle,
    headers = headers,
    method = method,
    path = query and path:sub(1, query - 1) or path,
  }
  local metadata = handle:streamInfo():dynamicMetadata():get(JWT_FILTER)
  -- No token (or a failed one, which jwt_authn already refused): no payload at all.
  q.payload = metadata and metadata[payload_key] or nil
  if q.payload ~= nil and type(q.payload) ~= "table" then
    error("token payload is not an object")
  end
  return q
end

function M.segments(q, glob)
  if q.segments == nil then
    q.segments = glob.split(q.path)
  end
  return q.segments
end

function M.peer(q, net)
  if q.peer == nil then
    local address = q.handle:streamInfo():downstreamDirectRemoteAddress()
    q.peer = net.peer_bytes(address)
    if q.peer == nil then
      error("cannot read the peer address " .. tostring(address))
    end
  end
  return q.peer
end

local function header_value(headers, name, i)
  return headers:getAtIndex(name, i - 1) -- counted from 0
end

-- Calls test(value, argument) for each value of a header, one by one, until one returns true.
function M.any_header_value(q, name, test, argument)
  local headers = q.headers
  return values.any(headers:getNumValues(name), header_value, headers, name, test, argument)
end

return M
end)()
local claims = (function()
-- Claims of the verified token and string comparisons (mirrors the interpreter's claim atoms).
-- JSON arrays arrive as tables with integer keys (a JSON null leaves a hole), objects as tables
-- with string keys; a claim atom is false on a missing claim or one of another type.
local M = {}

-- The value at a path of object keys, or nil when a step is missing or not an object.
function M.value(q, path)
  local value = q.payload
  for i = 1, #path do
    if type(value) ~= "table" then
      return nil
    end
    value = value[path[i]]
  end
  return value
end

function M.in_set(value, set)
  return type(value) == "string" and set[value] == true
end

function M.has_prefix(value, prefix)
  return type(value) == "string" and value:sub(1, #prefix) == prefix
end

function M.has_suffix(value, suffix)
  return type(value) == "string" and (#suffix == 0 or value:sub(-#suffix) == suffix)
end

-- For `header "h" == token.x`: the claim is a string equal to this header value.
function M.equals_claim(value, claim)
  return type(claim) == "string" and value == claim
end

-- A list holding the string, or a string equal to it.
function M.contains(value, wanted)
  if type(value) == "string" then
    return value == wanted
  end
  if type(value) ~= "table" then
    return false
  end
  -- pairs, not ipairs: a null inside the list leaves a hole that ipairs would stop at.
  for key, element in pairs(value) do
    if type(key) == "number" and element == wanted then
      return true
    end
  end
  return false
end

-- Any of the values: for `ent` claims checked against a set of catalog refs.
function M.contains_any(value, set)
  if type(value) == "string" then
    return set[value] == true
  end
  if type(value) ~= "table" then
    return false
  end
  for key, element in pairs(value) do
    if type(key) == "number" and type(element) == "string" and set[element] == true then
      return true
    end
  end
  return false
end

-- membership: { issuers = set of issuer URLs, subjects = set, entities = set }
function M.member(q, membership)
  local payload = q.payload
  if payload == nil or not M.in_set(payload.iss, membership.issuers) then
    return false
  end
  return M.in_set(payload.sub, membership.subjects) or M.contains_any(payload.ent, membership.entities)
end

return M
end)()
local peer = (function()
-- The verified client certificate (mirrors policyc/semantics/peer.py), read once per request from
-- the downstream TLS connection. No TLS, no certificate, or one not validated: no peer, and every
-- peer atom is false. A certificate that fails validation never gets here: the handshake fails.
local M = {}

local function read(handle)
  local ssl = handle:streamInfo():downstreamSslConnection()
  if ssl == nil or not ssl:peerCertificatePresented() or not ssl:peerCertificateValidated() then
    return false
  end
  local peer = {
    uri = ssl:uriSanPeerCertificate(),
    dns = ssl:dnsSansPeerCertificate(),
    subject = { ssl:subjectPeerCertificate() },
  }
  for field, values in pairs(peer) do
    if type(values) ~= "table" then
      error("peer " .. field .. " is not a list")
    end
    for i = 1, #values do
      if type(values[i]) ~= "string" then
        error("peer " .. field .. " holds a " .. type(values[i]))
      end
    end
  end
  return peer
end

local function get(q)
  if q.certificate == nil then
    q.certificate = read(q.handle)
  end
  return q.certificate
end

function M.trusted(q)
  return get(q) ~= false
end

-- Calls test(value, argument) for each value of the certificate's field until one returns true.
function M.any(q, field, test, argument)
  local peer = get(q)
  return peer ~= false and values.any_element(peer[field], test, argument)
end

return M
end)()
local decide = (function()
-- The decision (mirrors the interpreter's deny-overrides and default deny) and the fail-closed
-- wrapper: any error inside answers 403 and is logged, because Envoy's Lua filter would let the
-- request through. Rules arrive sorted by name, so the first match is the one to name.
local M = {}

local NAMESPACE = "policyc"

-- Indexes rules by the path prefixes one of which a request's path must have for the rule to
-- match (`prefixes`, worked out by the compiler; an exact path is its own prefix). A request then
-- tests only the rules whose prefix its path has, found with one table look-up per prefix
-- length, and the rules without prefixes, instead of every rule. Built once, when the script loads.
function M.indexed(rules)
  local always, lengths, by_prefix = {}, {}, {}
  for i = 1, #rules do
    local prefixes = rules[i].prefixes
    if prefixes == nil then
      always[#always + 1] = i
    else
      for _, prefix in ipairs(prefixes) do
        local length = #prefix
        if by_prefix[length] == nil then
          by_prefix[length] = {}
          lengths[#lengths + 1] = length
        end
        local hits = by_prefix[length][prefix] or {}
        hits[#hits + 1] = i
        by_prefix[length][prefix] = hits
      end
    end
  end
  rules.index = { always = always, lengths = lengths, by_prefix = by_prefix }
  return rules
end

-- The positions of the rules that may match, ascending (so in name order), maybe repeated.
local function candidates(index, path)
  local found = {}
  for i = 1, #index.always do
    found[i] = index.always[i]
  end
  for _, length in ipairs(index.lengths) do
    local hits = index.by_prefix[length][path:sub(1, length)]
    if hits ~= nil then
      for i = 1, #hits do
        found[#found + 1] = hits[i]
      end
    end
  end
  table.sort(found)
  return found
end

local function first_match(rules, q)
  local previous = nil
  for _, i in ipairs(candidates(rules.index, q.path)) do
    if i ~= previous and rules[i].test(q) then
      return rules[i].name
    end
    previous = i
  end
  return nil
end

local function record(handle, policy, decision, rule)
  local metadata = handle:streamInfo():dynamicMetadata()
  metadata:set(NAMESPACE, "service", policy.service)
  metadata:set(NAMESPACE, "decision", decision)
  if rule ~= nil then
    metadata:set(NAMESPACE, "rule", rule)
  end
end

local function deny(handle)
  handle:respond({ [":status"] = "403", ["content-type"] = "text/plain" }, "access denied\n")
end

-- policy: { service, deny = rules, allow = rules, decides_allow, dry_run, payload_key }; both rule
-- lists come through M.indexed
local function decide(handle, policy, request)
  local q = request.new(handle, policy.payload_key)
  local rule = first_match(policy.deny, q)
  local decision
  if rule ~= nil then
    decision = "deny"
  elseif policy.decides_allow then
    rule = first_match(policy.allow, q)
    decision = rule and "allow" or "default-deny"
  else
    decision = "no-deny" -- the allow rules are enforced by the RBAC filter after this one
  end
  record(handle, policy, decision, rule)
  if (decision == "deny" or decision == "default-deny") and not policy.dry_run then
    deny(handle)
  end
end

function M.run(handle, policy, request)
  local ok, problem = pcall(decide, handle, policy, request)
  if not ok then
    handle:logErr("policyc: error deciding for service " .. policy.service .. ": " .. tostring(problem))
    pcall(record, handle, policy, "error", nil)
    if not policy.dry_run then
      deny(handle)
    end
  end
end

return M
end)()

local K, C = {}, {}
K[1] = {["spiffe://example.org/ns/ci/sa/deploy-bot"] = true}
K[2] = {{""}, {"deployments"}, {"", ""}}
K[3] = {"scp"}
K[4] = {["GET"] = true, ["HEAD"] = true, ["OPTIONS"] = true}
K[5] = {issuers = {["https://backstage.example.com/api/auth"] = true}, subjects = {["user:default/bob"] = true}, entities = {["group:default/sre"] = true}}
K[6] = {issuers = {["https://backstage.example.com/api/auth"] = true}, subjects = {["user:default/alice"] = true}, entities = {["group:default/payments-team"] = true}}
K[7] = {["DELETE"] = true, ["PATCH"] = true, ["POST"] = true, ["PUT"] = true}
K[8] = {{""}, {"api"}, {"v1"}, glob.ANY}
K[9] = {issuers = {["https://backstage.example.com/api/auth"] = true}, subjects = {["user:default/alice"] = true}, entities = {["group:default/payments-team"] = true}}
K[10] = {"sub"}
K[11] = {["user:default/dave"] = true}
K[12] = {{""}, {"api"}, {"v1"}, {"tenants"}, {"", ""}, {"invoices"}}
K[13] = {"tenant"}
C[1] = function(q) return (K[4][q.method] == true) end  -- condition read_only
C[2] = function(q) return claims.member(q, K[5]) end  -- condition sre
local DENY = decide.indexed({
})
local ALLOW = decide.indexed({
  {name = "deploy-bot", prefixes = {"/deployments/"}, test = function(q) return (peer.any(q, "uri", claims.in_set, K[1]) and (q.method == "POST") and glob.match(K[2], request.segments(q, glob))) end},  -- "payments.policy:22"
  {name = "health", prefixes = {"/healthz"}, test = function(q) return (q.path == "/healthz") end},  -- "payments.policy:9"
  {name = "settlement-bot", prefixes = {"/api/v1/settlements"}, test = function(q) return ((q.payload ~= nil and q.payload.iss == "https://example.okta.com/oauth2/default") and claims.contains(claims.value(q, K[3]), "payments:settle") and (q.method == "POST") and (q.path == "/api/v1/settlements")) end},  -- "payments.policy:18"
  {name = "sre-read", test = function(q) return (C[1](q) and C[2](q)) end},  -- "payments.policy:10"
  {name = "team-read", test = function(q) return (C[1](q) and claims.member(q, K[6])) end},  -- "payments.policy:14"
  {name = "team-write", prefixes = {"/api/v1"}, test = function(q) return ((K[7][q.method] == true) and glob.match(K[8], request.segments(q, glob)) and (claims.member(q, K[9]) or claims.in_set(claims.value(q, K[10]), K[11]))) end},  -- "payments.policy:11"
  {name = "tenant", prefixes = {"/api/v1/tenants/"}, test = function(q) return ((q.payload ~= nil) and glob.match(K[12], request.segments(q, glob)) and request.any_header_value(q, "x-tenant", claims.equals_claim, claims.value(q, K[13]))) end},  -- "payments.policy:15"
})
local POLICY = {
  service = "payments",
  deny = DENY,
  allow = ALLOW,
  decides_allow = true,
  dry_run = false,
  payload_key = "jwt_payload",
}
function envoy_on_request(handle)
  decide.run(handle, POLICY, request)
end
