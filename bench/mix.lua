-- wrk: a mix of prepared requests (bench/realistic.py writes them), one line each:
--   METHOD <tab> PATH <tab> TOKEN <tab> BODY (empty for a GET)
-- and optionally an order file (one 1-based line number per line: the Zipf variant's draws),
-- cycled through; without one, each request is drawn uniformly at random.
--   wrk -t1 -c64 -d10s -s bench/mix.lua URL -- requests.tsv [order.txt]
local prepared = {}
local order = nil
local at = 0

init = function(args)
  for line in io.lines(args[1]) do
    local method, path, token, body = line:match("^(%u+)\t([^\t]+)\t([^\t]+)\t?(.*)$")
    local headers = {["Authorization"] = "Bearer " .. token}
    if method == "POST" then
      headers["Content-Type"] = "application/x-www-form-urlencoded"
    else
      body = nil
    end
    prepared[#prepared + 1] = wrk.format(method, path, headers, body)
  end
  if args[2] then
    order = {}
    for line in io.lines(args[2]) do
      order[#order + 1] = tonumber(line)
    end
    at = math.random(#order)
  end
end

request = function()
  if order then
    at = at % #order + 1
    return prepared[order[at]]
  end
  return prepared[math.random(#prepared)]
end
