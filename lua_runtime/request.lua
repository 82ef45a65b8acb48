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

-- Whether the request arrives in [start, end), seconds since the epoch: the clock is read once per
-- request, in whole seconds (os.time), so a grant's window ends on time without a redeploy.
function M.within(q, start, stop)
  if q.now == nil then
    q.now = os.time()
  end
  return q.now >= start and q.now < stop
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
