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
