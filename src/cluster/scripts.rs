//! The Lua scripts: each step of the cluster protocol is one script, so one
//! round trip and atomic on the server. Keys are passed, never built in Lua.
//!
//! Every script that starts a run takes a fence from `INCR fence`; the
//! lease holds `instance/fence`, so only the holder of that exact run can
//! renew or finish it.

/// `try_start`: take the lease, or leave the pending flag.
///
/// KEYS: lease, fence, pending, pending set. ARGV: instance, TTL (ms),
/// pending-set member. Returns `{1, fence}` when started, `{0, holder}`
/// when another run holds the lease (the flag is left for it).
pub const TRY_START: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder then
  redis.call('SET', KEYS[3], '1')
  redis.call('SADD', KEYS[4], ARGV[3])
  return {0, holder}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. fence, 'PX', ARGV[2])
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[3])
return {1, fence}
"#;

/// `renew`: push the lease's expiry back, only for its holder.
///
/// KEYS: lease. ARGV: token (`instance/fence`), TTL (ms). Returns 1 when
/// renewed, 0 when the lease is gone or someone else's.
pub const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// `finish`: give the lease back, or hand it straight to a follow-up run
/// when a request was left pending meanwhile.
///
/// KEYS: lease, fence, pending, pending set. ARGV: token, instance, TTL
/// (ms), pending-set member. Returns `{-1}` when the lease was no longer
/// this run's, `{0}` when released, `{1, fence}` when this instance now
/// holds the follow-up's lease under a new fence.
pub const FINISH: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {-1}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('DEL', KEYS[3])
  redis.call('SREM', KEYS[4], ARGV[4])
  local fence = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[2] .. '/' .. fence, 'PX', ARGV[3])
  return {1, fence}
end
redis.call('DEL', KEYS[1])
return {0}
"#;

/// `claim`: the reconcile loop takes pending work whose lease is gone (its
/// holder died before finishing).
///
/// KEYS: lease, fence, pending, pending set. ARGV: instance, TTL (ms),
/// member. Returns `{1, fence}` when claimed, `{0}` otherwise (a lease is
/// still held, or nothing is pending: then the member leaves the set).
pub const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[3])
  return {0}
end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[3])
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. fence, 'PX', ARGV[2])
return {1, fence}
"#;

/// `put_result`: keep a result only if its fence is newer than the one
/// kept, wherever it comes from.
///
/// KEYS: result. ARGV: fence, instance, body. Returns 1 when kept, 0 when
/// refused as older.
pub const PUT_RESULT: &str = r#"
local kept = redis.call('HGET', KEYS[1], 'fence')
if kept and tonumber(kept) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'instance', ARGV[2], 'body', ARGV[3])
return 1
"#;
