-- The decision (mirrors the interpreter's deny-overrides and default deny) and the fail-closed
-- wrapper: any error inside answers 403 and is logged, because Envoy's Lua filter would let the
-- request through. Rules arrive sorted by name, so the first match is the one to name.
local M = {}

local NAMESPACE = "policyc"

local function first_match(rules, q)
  for i = 1, #rules do
    if rules[i].test(q) then
      return rules[i].name
    end
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

-- policy: { service, deny = rules, allow = rules, decides_allow, dry_run, payload_key }
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
