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
