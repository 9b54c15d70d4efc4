-- One rate-limit decision: the same integer arithmetic as algorithm.rs, on one hash key.
-- KEYS[1]: the key's hash. ARGV: algorithm (g, s, f), cost, now in µs ('' = Redis TIME),
-- then count, burst and period in ms for each quota.
-- Fields per quota i: a<i> (TAT, or window index + 1), b<i> (count), c<i> (previous count).
-- Returns {allowed, binding quota (0-based), remaining, reset µs, retry µs}.
local function idiv(a, b)
  return (a - math.fmod(a, b)) / b
end

local algorithm = ARGV[1]
local cost = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  if redis.replicate_commands then
    redis.replicate_commands()
  end
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[3])
end

local n = (#ARGV - 3) / 3
local fields = {}
for i = 0, n - 1 do
  fields[#fields + 1] = 'a' .. i
  fields[#fields + 1] = 'b' .. i
  fields[#fields + 1] = 'c' .. i
end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))

local verdicts = {}
local allowed = true
local binding = 1
for i = 1, n do
  local count = tonumber(ARGV[1 + 3 * i])
  local burst = tonumber(ARGV[2 + 3 * i])
  local period = tonumber(ARGV[3 + 3 * i]) * 1000
  local a = tonumber(stored[3 * i - 2]) or 0
  local b = tonumber(stored[3 * i - 1]) or 0
  local c = tonumber(stored[3 * i]) or 0
  local v = {}
  if algorithm == 'g' then
    local interval = idiv(period, count)
    local tat = math.max(a, now)
    local horizon = now + burst * interval
    local remaining_now = idiv(horizon - tat, interval)
    local next_tat = tat + cost * interval
    if cost > burst then
      v = {false, remaining_now, tat - now, period, a, b, c}
    elseif next_tat <= horizon then
      v = {true, idiv(horizon - next_tat, interval), next_tat - now, 0, next_tat, 0, 0}
    else
      v = {false, remaining_now, tat - now, next_tat - horizon, a, b, c}
    end
  else
    local window = idiv(now, period)
    local start = window * period
    local reset = start + period - now
    local current, previous = 0, 0
    if a == window + 1 then
      current, previous = b, c
    elseif a == window then
      previous = b
    end
    local estimate = current
    if algorithm == 's' then
      local period_ms = period / 1000
      local elapsed_ms = idiv(now - start, 1000)
      estimate = current + idiv(previous * (period_ms - elapsed_ms), period_ms)
    end
    local remaining_now = math.max(count - estimate, 0)
    if cost > count then
      v = {false, remaining_now, reset, period, a, b, c}
    elseif estimate + cost <= count then
      v = {true, count - estimate - cost, reset, 0, window + 1, current + cost, previous}
    elseif algorithm == 'f' then
      v = {false, remaining_now, reset, reset, a, b, c}
    else
      local period_ms = period / 1000
      local function first_fit(prev, room)
        if prev == 0 then
          return 0
        end
        return math.max(period_ms - idiv((room + 1) * period_ms - 1, prev), 0)
      end
      local admitted_at
      if current + cost <= count then
        admitted_at = start + first_fit(previous, count - current - cost) * 1000
      else
        admitted_at = start + period + first_fit(current, count - cost) * 1000
      end
      v = {false, remaining_now, reset, math.max(admitted_at - now, 0), a, b, c}
    end
  end
  verdicts[i] = v
  if i > 1 then
    local current = verdicts[binding]
    if allowed and not v[1] then
      allowed = false
      binding = i
    elseif allowed and v[1] and v[2] < current[2] then
      binding = i
    elseif not allowed and not v[1] and v[4] > current[4] then
      binding = i
    end
  else
    allowed = v[1]
  end
end

if allowed and cost > 0 then
  local update = {}
  local idle_at = 0
  for i = 1, n do
    local v = verdicts[i]
    update[#update + 1] = 'a' .. (i - 1)
    update[#update + 1] = v[5]
    update[#update + 1] = 'b' .. (i - 1)
    update[#update + 1] = v[6]
    update[#update + 1] = 'c' .. (i - 1)
    update[#update + 1] = v[7]
    local period = tonumber(ARGV[3 + 3 * i]) * 1000
    local until_idle = v[5]
    if algorithm == 'f' then
      until_idle = v[5] * period
    elseif algorithm == 's' then
      until_idle = (v[5] + 1) * period
    end
    idle_at = math.max(idle_at, until_idle)
  end
  redis.call('HSET', KEYS[1], unpack(update))
  redis.call('PEXPIRE', KEYS[1], math.max(math.ceil((idle_at - now) / 1000), 1))
end

local v = verdicts[binding]
local retry = 0
if not allowed then
  retry = math.max(v[4], 1)
end
return {allowed and 1 or 0, binding - 1, v[2], v[3], retry}
