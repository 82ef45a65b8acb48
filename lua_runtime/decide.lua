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
