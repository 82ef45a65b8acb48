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
