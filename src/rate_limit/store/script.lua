-- One rate-limit decision on one string key: whether the request is admitted, and the state
-- as it was before it, so the client derives every figure with the same code as the memory
-- store. Only the admission test and the next state are computed here (integers held exactly
-- in doubles: every product stays below 2^53).
--
-- KEYS[1]: the key. ARGV[1]: 'G' (one GCRA quota), 'g', 's' or 'f'; ARGV[2]: cost;
-- ARGV[3]: now in µs ('' = Redis TIME); ARGV[4]: the key's time to live in ms, as text (the
-- longest any state can take to run out: computing it here would format a number, which
-- costs more than the rest of the script); then two numbers per quota: for GCRA the
-- emission interval and the tolerance (burst × interval), for the windows the count and the
-- period, all in µs.
--
-- The state is packed doubles, never decimal text (formatting and parsing large numbers is
-- what costs most in a script): 'G' stores the theoretical arrival time, the others three
-- doubles per quota (a: TAT or window index + 1, b: count, c: previous window's count). A
-- value of another length counts as a fresh key.
--
-- Returns {admitted (1 or 0), now, state}: state is the TAT for 'G', else the packed string
-- or false when the key was fresh.
local now = ARGV[3]
if now == '' then
  local time = redis.call('TIME')
  now = time[1] * 1000000 + time[2]
else
  now = tonumber(now)
end
local cost = tonumber(ARGV[2])
local algorithm = ARGV[1]

if algorithm == 'G' then
  local raw = redis.call('GET', KEYS[1])
  local tat = 0
  if raw and #raw == 8 then
    tat = struct.unpack('<d', raw)
  end
  local next_tat = math.max(tat, now) + cost * ARGV[5]
  if next_tat - now > tonumber(ARGV[6]) then
    return {0, now, tat}
  end
  if cost > 0 then
    redis.call('SET', KEYS[1], struct.pack('<d', next_tat), 'PX', ARGV[4])
  end
  return {1, now, tat}
end

local n = (#ARGV - 4) / 2
local format = string.rep('d', 3 * n)
local raw = redis.call('GET', KEYS[1])
local state
if raw and #raw == 24 * n then
  state = {struct.unpack('<' .. format, raw)}
else
  raw = false
  state = {}
  for i = 1, 3 * n do
    state[i] = 0
  end
end

for i = 1, n do
  local j = 3 * i - 2
  local x, y = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  local a, b, c = state[j], state[j + 1], state[j + 2]
  if algorithm == 'g' then
    local next_tat = math.max(a, now) + cost * x
    if next_tat - now > y then
      return {0, now, raw}
    end
    state[j], state[j + 1], state[j + 2] = next_tat, 0, 0
  else
    local window = (now - math.fmod(now, y)) / y
    local current, previous = 0, 0
    if a == window + 1 then
      current, previous = b, c
    elseif a == window then
      previous = b
    end
    local estimate = current
    if algorithm == 's' then
      local period_ms = y / 1000
      local elapsed = now - window * y
      local elapsed_ms = (elapsed - math.fmod(elapsed, 1000)) / 1000
      local weighted = previous * (period_ms - elapsed_ms)
      estimate = current + (weighted - math.fmod(weighted, period_ms)) / period_ms
    end
    if estimate + cost > x then
      return {0, now, raw}
    end
    state[j], state[j + 1], state[j + 2] = window + 1, current + cost, previous
  end
end

if cost > 0 then
  redis.call('SET', KEYS[1], struct.pack('<' .. format, unpack(state)), 'PX', ARGV[4])
end
return {1, now, raw}
