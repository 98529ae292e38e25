//! The Lua scripts: each step of the cluster protocol is one script, so one
//! round trip and atomic on the server. Keys are passed, never built in Lua.
//!
//! Every start takes a fence from `INCR fence`; the lease holds
//! `instance/fence`. A run is *current* while no later run of its
//! `(session, op)` has started, that is while the fence counter still
//! equals its fence: only a current run may renew, finish or keep a
//! result. Counters, flags and results expire a week after their last
//! write, so the keys of sessions long gone do not pile up.

/// How long a fence counter, pending flag or result outlives its last write.
pub const KEY_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// `try_start`: take the lease, or leave a pending request for its holder.
///
/// KEYS: lease, fence, pending, pending set. ARGV: instance, TTL (ms),
/// pending-set member, the requester's generation, key TTL (ms), the
/// requester's clock in microseconds. Returns `{1, fence}` when started,
/// `{0, holder}` when another run holds the lease: the pending flag then
/// keeps the highest generation asked for.
///
/// A fence is at least the starter's clock: a Redis restarted without its
/// data starts its counters afresh, and fences must still never repeat.
pub const TRY_START: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder then
  local wanted = tonumber(redis.call('GET', KEYS[3]) or '-1')
  if tonumber(ARGV[4]) > wanted then
    redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
  end
  redis.call('SADD', KEYS[4], ARGV[3])
  return {0, holder}
end
-- Counters pass 2^32: read them back as Redis writes them, never
-- through a Lua number's own formatting.
if redis.call('INCR', KEYS[2]) < tonumber(ARGV[6]) then
  redis.call('SET', KEYS[2], ARGV[6])
end
local fence = redis.call('GET', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. fence, 'PX', ARGV[2])
return {1, fence}
"#;

/// `renew`: push the lease's expiry back. A lease that lapsed while no
/// other run started is taken back; one another run took is not.
///
/// KEYS: lease, fence. ARGV: token (`instance/fence`), TTL (ms), fence.
/// Returns 1 when renewed, 0 when the run is no longer current.
pub const RENEW: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder and tonumber(redis.call('GET', KEYS[2]) or '0') == tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// `finish`: give the lease back and tell every instance how the run ended,
/// on the events stream. When a request is pending for a generation the
/// run did not cover, the flag stays (someone must run again) and the
/// answer says so.
///
/// The end is also kept beside the lease (`last`), so a follower that
/// finds the lease gone knows at once whether its run ended or its holder
/// died.
///
/// KEYS: lease, fence, pending, pending set, stream, last. ARGV: token,
/// fence, covered generation, member, stream length, instance, session,
/// op, outcome, error, key TTL (ms). Returns -1 when a later run has
/// started (nothing changes), 0 when released, 1 when released with more
/// wanted.
pub const FINISH: &str = r#"
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[2]) then
  return -1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
local more = 0
if tonumber(redis.call('GET', KEYS[3]) or '-1') > tonumber(ARGV[3]) then
  more = 1
else
  redis.call('DEL', KEYS[3])
  redis.call('SREM', KEYS[4], ARGV[4])
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*',
  'type', 'finished', 'instance', ARGV[6], 'session', ARGV[7], 'op', ARGV[8],
  'fence', ARGV[2], 'outcome', ARGV[9], 'covered', ARGV[3], 'error', ARGV[10])
redis.call('HSET', KEYS[6], 'fence', ARGV[2], 'instance', ARGV[6],
  'outcome', ARGV[9], 'covered', ARGV[3], 'error', ARGV[10])
redis.call('PEXPIRE', KEYS[6], ARGV[11])
return more
"#;

/// `abandoned`: for the reconcile loop, whether a request is pending with
/// no lease held (its holder died, or finished wanting more).
///
/// KEYS: lease, pending, pending set. ARGV: member. Returns the pending
/// generation, or -1 (a lease is held, or nothing is pending: then the
/// member leaves the set).
pub const ABANDONED: &str = r#"
local wanted = redis.call('GET', KEYS[2])
if not wanted then
  redis.call('SREM', KEYS[3], ARGV[1])
  return -1
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
return tonumber(wanted)
"#;

/// `put_result`: keep a result only from the current run of its
/// `(session, op)`, and only if newer than the one kept, wherever it comes
/// from; a kept result goes to every instance on the events stream.
///
/// KEYS: result, fence, stream. ARGV: fence, instance, body, stream
/// length, session, op, key TTL (ms). Returns 1 when kept, 0 when refused.
pub const PUT_RESULT: &str = r#"
local fence = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > fence then
  return 0
end
local kept = redis.call('HGET', KEYS[1], 'fence')
if kept and tonumber(kept) >= fence then
  return 0
end
redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'instance', ARGV[2], 'body', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
  'type', 'result', 'instance', ARGV[2], 'session', ARGV[5], 'op', ARGV[6],
  'fence', ARGV[1], 'body', ARGV[3])
return 1
"#;

/// How long a spending hash outlives its last write: a session's for the
/// key TTL; an hour's buckets for two hours (an hour and its sweep).
pub const HOUR_KEY_TTL_MS: u64 = 2 * 3600 * 1000;

/// `reserve`: before a call, count its estimated prompt against the
/// budgets every instance shares, if the run is still current and every
/// budget has room; otherwise change nothing and name the budget.
///
/// Spending is kept in hashes: a session's in `t` (tokens) and `c` (cost,
/// billionths); an hour's (one feed's, or everything's) in one field pair
/// per minute, `t<minute>` and `c<minute>`, the minutes counted since
/// 1970. Minutes older than the hour are swept once a minute.
///
/// KEYS: fence, session spending, feed spending, all spending, the
/// session's budget (`lifted`, and `t` and `c` an operator raised it by).
/// ARGV: fence, minute, tokens, cost, then the limits (`-1` for none):
/// session tokens, session cost, feed tokens, feed cost, all tokens, all
/// cost; then `1` when the session's budget was lifted here, `1` when the
/// session has a feed, key TTL (ms), hour key TTL (ms).
/// Returns `{0, ''}` when reserved, `{1, budget}` when a budget has no
/// room, `{-1, ''}` when a later run has started.
pub const RESERVE: &str = r#"
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then
  return {-1, ''}
end
local minute = tonumber(ARGV[2])
local tokens, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local function over(spent, ahead, limit)
  limit = tonumber(limit)
  return limit >= 0 and spent + ahead > limit
end
local function hour(key)
  local fields = {}
  for i = 0, 59 do
    fields[#fields + 1] = 't' .. (minute - i)
    fields[#fields + 1] = 'c' .. (minute - i)
  end
  local values = redis.call('HMGET', key, unpack(fields))
  local t, c = 0, 0
  for i = 1, #values, 2 do
    t = t + tonumber(values[i] or '0')
    c = c + tonumber(values[i + 1] or '0')
  end
  return t, c
end
local own = redis.call('HMGET', KEYS[5], 'lifted', 't', 'c')
local lifted = ARGV[11] == '1' or tonumber(own[1] or '0') > 0
if not lifted then
  local spent = redis.call('HMGET', KEYS[2], 't', 'c')
  local raised_t, raised_c = tonumber(own[2] or '0'), tonumber(own[3] or '0')
  if over(tonumber(spent[1] or '0') - raised_t, tokens, ARGV[5]) then return {1, 'session_tokens'} end
  if over(tonumber(spent[2] or '0') - raised_c, cost, ARGV[6]) then return {1, 'session_cost'} end
end
local has_feed = ARGV[12] == '1'
if has_feed then
  local t, c = hour(KEYS[3])
  if over(t, tokens, ARGV[7]) then return {1, 'feed_tokens_per_hour'} end
  if over(c, cost, ARGV[8]) then return {1, 'feed_cost_per_hour'} end
end
local t, c = hour(KEYS[4])
if over(t, tokens, ARGV[9]) then return {1, 'tokens_per_hour'} end
if over(c, cost, ARGV[10]) then return {1, 'cost_per_hour'} end
redis.call('HINCRBY', KEYS[2], 't', tokens)
redis.call('HINCRBY', KEYS[2], 'c', cost)
redis.call('PEXPIRE', KEYS[2], ARGV[13])
local function count(key)
  redis.call('HINCRBY', key, 't' .. minute, tokens)
  redis.call('HINCRBY', key, 'c' .. minute, cost)
  if tonumber(redis.call('HGET', key, 'swept') or '-1') ~= minute then
    for _, field in ipairs(redis.call('HKEYS', key)) do
      local at = tonumber(string.sub(field, 2))
      if field ~= 'swept' and at and at <= minute - 60 then
        redis.call('HDEL', key, field)
      end
    end
    redis.call('HSET', key, 'swept', minute)
  end
  redis.call('PEXPIRE', key, ARGV[14])
end
if has_feed then count(KEYS[3]) end
count(KEYS[4])
return {0, ''}
"#;

/// `settle`: after a call, replace its estimate by what it spent (the
/// difference, in the minute it was reserved). Not fenced: what was spent
/// was spent, whichever run spent it.
///
/// KEYS: session spending, feed spending, all spending. ARGV: minute,
/// tokens, cost (both may be negative), `1` when the session has a feed.
pub const SETTLE: &str = r#"
local minute = ARGV[1]
local function add(key, t, c)
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, t, ARGV[2])
    redis.call('HINCRBY', key, c, ARGV[3])
  end
end
add(KEYS[1], 't', 'c')
if ARGV[4] == '1' then add(KEYS[2], 't' .. minute, 'c' .. minute) end
add(KEYS[3], 't' .. minute, 'c' .. minute)
return 1
"#;
