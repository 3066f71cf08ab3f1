-- wrk script for `make bench`: POST one AdmissionReview, a fresh uid per request
-- (so every audit line can be told apart). The body comes from the file named after `--`.
local prefix, suffix
local counter = 0

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local at = string.find(body, "@UID@", 1, true)
  assert(at, "the body has no @UID@ placeholder")
  prefix = string.sub(body, 1, at - 1)
  suffix = string.sub(body, at + 5)
  wrk.method = "POST"
  wrk.path = "/validate"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, prefix .. tostring(counter) .. "-" .. tostring(math.random(1e9)) .. suffix)
end
