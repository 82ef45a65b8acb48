-- Path globs (mirrors policyc/interpret/glob.py). A compiled pattern is an array of segments;
-- a segment is the marker ANY (`**`) or an array of literal pieces that `*`s stand between.
-- Matching is greedy with one backtrack point, so time stays O(pattern * path).
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

function M.match(pattern, segments)
  local p, i, np, ni = 1, 1, #pattern, #segments
  local star, star_i = 0, 0
  while i <= ni do
    if p <= np and pattern[p] == M.ANY then
      star, star_i = p, i
      p = p + 1
    elseif p <= np and segment_matches(pattern[p], segments[i]) then
      p = p + 1
      i = i + 1
    elseif star > 0 then
      star_i = star_i + 1
      p, i = star + 1, star_i
    else
      return false
    end
  end
  while p <= np do
    if pattern[p] ~= M.ANY then
      return false
    end
    p = p + 1
  end
  return true
end

return M
