-- The flash-sale (秒杀) gate: one sale's stock and per-member limits, decided atomically in Redis.
--
-- KEYS[1] units left (a string integer; its absence means "not built": rebuild from PostgreSQL)
-- KEYS[2] hash member id -> units that member holds in this sale
-- KEYS[3] hash reservation key -> member id (one entry per idempotency key that holds a unit)
-- KEYS[4] the sale's terms as the gate enforces them: "<starts ms> <ends ms> <stock>" (an admin's edit
--         writes it under the sale's row lock, so every process's next attempt obeys it; `stock` is
--         the allotment KEYS[1] was counted from)
--
-- ARGV[1] is the operation:
--   take    member, limit, reservation, now ms -> taken | duplicate | not_started | ended | limit |
--                                                 sold_out | missing
--   take_as merchant, limit, sale, key, now ms  -> {verdict, version, session, member} |
--                                                 {no_session, version} | {foreign, version, session}
--           the same take for the member whose session record is KEYS[5] (a member session of
--           `merchant`, else nothing is touched), its reservation `flash:<sale>:<member>:<key>`;
--           KEYS[6] is the configuration version, read in the same call
--   release member, reservation, give_back(0|1) -> released | absent | missing
--   restock                                    -> restocked | missing   (one unit back, no reservation)
--   terms   starts ms, ends ms, stock, ttl      -> set   (an edit: units left move by the stock's change)
--   load    left, ttl seconds, "starts ends stock", n_members, (member, count) * n_members,
--           (reservation, member) *            -> loaded | present
--           (terms an edit wrote meanwhile win: `left` is then moved by their stock's difference)

local op = ARGV[1]

local function terms()
  local raw = redis.call('GET', KEYS[4])
  if not raw then return nil end
  local starts, ends, stock = string.match(raw, '^(%d+) (%d+) (%d+)$')
  return tonumber(starts), tonumber(ends), tonumber(stock)
end

local function take(member, limit, reservation, now)
  if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
  local starts, ends = terms()
  if not starts then return 'missing' end
  if redis.call('HEXISTS', KEYS[3], reservation) == 1 then return 'duplicate' end
  if now < starts then return 'not_started' end
  if now >= ends then return 'ended' end
  if tonumber(redis.call('HGET', KEYS[2], member) or '0') >= limit then return 'limit' end
  if tonumber(redis.call('GET', KEYS[1])) <= 0 then return 'sold_out' end
  redis.call('DECR', KEYS[1])
  redis.call('HINCRBY', KEYS[2], member, 1)
  redis.call('HSET', KEYS[3], reservation, member)
  return 'taken'
end

if op == 'take' then
  return take(ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]))
end

if op == 'take_as' then
  local version = redis.call('GET', KEYS[6]) or '0'
  local raw = redis.call('GET', KEYS[5])
  if not raw then return {'no_session', version} end
  local ok, session = pcall(cjson.decode, raw)
  if not ok or type(session) ~= 'table' or session['kind'] ~= 'member' then return {'no_session', version} end
  -- Anything unexpected (another merchant's session, ids not numbers) is left to the ordinary path.
  if type(session['merchant_id']) ~= 'number' or type(session['subject_id']) ~= 'number'
      or string.format('%d', session['merchant_id']) ~= ARGV[2] then
    return {'foreign', version, raw}
  end
  local member = string.format('%d', session['subject_id'])
  local reservation = 'flash:' .. ARGV[4] .. ':' .. member .. ':' .. ARGV[5]
  return {take(member, tonumber(ARGV[3]), reservation, tonumber(ARGV[6])), version, raw, member}
end

if op == 'release' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
  local member, reservation, give_back = ARGV[2], ARGV[3], ARGV[4]
  if redis.call('HDEL', KEYS[3], reservation) == 0 then return 'absent' end
  if redis.call('HINCRBY', KEYS[2], member, -1) <= 0 then redis.call('HDEL', KEYS[2], member) end
  if give_back == '1' then redis.call('INCR', KEYS[1]) end
  return 'released'
end

if op == 'restock' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
  redis.call('INCR', KEYS[1])
  return 'restocked'
end

if op == 'terms' then
  local _, _, stock = terms()
  local new_stock, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
  if stock and redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('INCRBY', KEYS[1], new_stock - stock)
    redis.call('EXPIRE', KEYS[1], ttl)
    redis.call('EXPIRE', KEYS[2], ttl)
    redis.call('EXPIRE', KEYS[3], ttl)
  elseif not stock then
    redis.call('DEL', KEYS[1])  -- counted from an allotment not known here: recount from PostgreSQL
  end
  redis.call('SET', KEYS[4], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4], 'EX', ttl)
  return 'set'
end

if op == 'load' then
  local ttl = tonumber(ARGV[3])
  local left = tonumber(ARGV[2])
  local _, _, stock = terms()
  if stock then
    local _, _, loaded_stock = string.match(ARGV[4], '^(%d+) (%d+) (%d+)$')
    left = left + stock - tonumber(loaded_stock)
  else
    redis.call('SET', KEYS[4], ARGV[4], 'EX', ttl)
  end
  if redis.call('EXISTS', KEYS[1]) == 1 then return 'present' end
  redis.call('DEL', KEYS[2], KEYS[3])
  -- A placeholder field keeps both hashes (and so their expiry) alive while they are empty.
  redis.call('HSET', KEYS[2], '_', 0)
  redis.call('HSET', KEYS[3], '_', 0)
  local n_members = tonumber(ARGV[5])
  local i = 6
  for _ = 1, n_members do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  while i < #ARGV do
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  redis.call('SET', KEYS[1], math.max(left, 0), 'EX', ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  return 'loaded'
end

return redis.error_reply('unknown flash gate operation ' .. tostring(op))
