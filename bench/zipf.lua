-- wrk script for bench/compare's HTTP cache rows: GET <prefix><n>, n drawn by a Zipf law over `keys` URLs, with a
-- share `oneoff` of requests for URLs asked for once (a crawler's scan). Deterministic per thread.
-- usage: wrk -s bench/zipf.lua <url> -- <path-prefix> <keys> <exponent> <oneoff> <run-tag>
-- (the run tag, unique per run, keeps one-off URLs from repeating across runs and servers)
local prefix, keys, exponent, oneoff
local cumulative, total = {}, 0
local counter, thread_tag = 0, 0

function init(args)
  prefix = args[1] or "/cached/z/"
  keys = tonumber(args[2] or "100000")
  exponent = tonumber(args[3] or "0.9")
  oneoff = tonumber(args[4] or "0.3")
  for rank = 1, keys do
    total = total + 1 / (rank ^ exponent)
    cumulative[rank] = total
  end
  thread_tag = (args[5] or "run") .. "-" .. tostring({}):sub(8)
  math.randomseed(12345)
end

function request()
  local path
  if math.random() < oneoff then
    counter = counter + 1
    path = prefix .. "once-" .. thread_tag .. "-" .. counter
  else
    local point = math.random() * total
    local low, high = 1, keys
    while low < high do
      local middle = math.floor((low + high) / 2)
      if cumulative[middle] < point then low = middle + 1 else high = middle end
    end
    path = prefix .. low
  end
  return wrk.format("GET", path)
end
