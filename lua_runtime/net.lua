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
