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
