-- wrk script: POST one fixed 128-d query (SIFT-like integer components) to /search,
-- the same request shape `loadgen query` sends. Usage: wrk -t1 -c4 -d10s -s search.lua http://HOST:PORT
local parts = {}
for i = 0, 127 do
  parts[#parts + 1] = tostring((i * 37) % 128)
end
wrk.method = "POST"
wrk.path = "/search"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"vector":[' .. table.concat(parts, ",") .. '],"top_k":10}'
