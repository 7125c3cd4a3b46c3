//! The Redis quota backend, shared by a fleet of gateways. One Lua script call per check
//! (or per batch of concurrent checks, `batch.rs`) increments the org's window counter
//! and sets its expiry atomically, so N gateways sharing one Redis admit exactly
//! `calls` calls per window. Each thread has its own connection (a multiplexed
//! connection is driven by a task on the runtime that made it; one per worker keeps a
//! check on the thread of its request). Connections are made lazily and re-made after
//! failures (at most one attempt per second and thread), so the gateway starts and
//! keeps serving while Redis is down. A busy org far from its limit has calls counted
//! ahead for each thread (`blocks.rs`), so most of its checks need no round trip.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::batch::Batcher;
use super::blocks::{self, Blocks};
use crate::config::Limit;

const OP_TIMEOUT: Duration = Duration::from_millis(1000);
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// How long a thread keeps a block before giving back what it did not use.
const LEASE: Duration = Duration::from_secs(1);

/// Counts ARGV[2] calls (a batch, see `batch.rs`) in the window's counter KEYS[1] and
/// returns {total after them, calls reserved besides}. The key expires with its
/// window (ARGV[1] ms). Calls past the limit (ARGV[3]) are refused and not kept in the
/// counter, so calls given back later can be used again. When the counter then stays
/// at or below ARGV[5], a block of ARGV[4] calls is reserved for the caller.
const SCRIPT: &str = r"
local n = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local total = redis.call('INCRBY', KEYS[1], n)
if total == n then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if total > limit then
  redis.call('DECRBY', KEYS[1], math.min(n, total - limit))
  return {total, 0}
end
local block = tonumber(ARGV[4])
if block > 0 and total + block <= tonumber(ARGV[5]) then
  redis.call('INCRBY', KEYS[1], block)
  return {total, block}
end
return {total, 0}
";

/// Gives back ARGV[1] reserved calls that were not used, unless the window's counter
/// has expired meanwhile.
const RELEASE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECRBY', KEYS[1], ARGV[1]) end
return 0
";

pub(super) struct Redis {
    client: Result<redis::Client, String>,
    prefix: String,
    /// `quota.reserve`: the largest block a thread takes (0: none).
    reserve: u64,
    script: redis::Script,
    release: redis::Script,
    conns: std::sync::Mutex<HashMap<ThreadId, Slot>>,
}

/// A thread's connection (and when it last tried to connect) and its batches.
type Slot = Arc<PerThread>;

#[derive(Default)]
struct PerThread {
    conn: Mutex<(Option<ConnectionManager>, Option<Instant>)>,
    batches: Batcher,
    blocks: Blocks,
}

impl Redis {
    pub(super) fn new(url: &str, prefix: &str, reserve: u64) -> Redis {
        Redis {
            client: redis::Client::open(url).map_err(|e| e.to_string()),
            prefix: prefix.to_string(),
            reserve,
            script: redis::Script::new(SCRIPT),
            release: redis::Script::new(RELEASE),
            conns: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self) -> Slot {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns
            .entry(std::thread::current().id())
            .or_default()
            .clone()
    }

    async fn connection(&self, slot: &PerThread) -> Result<ConnectionManager, String> {
        let mut guard = slot.conn.lock().await;
        if let Some(c) = &guard.0 {
            return Ok(c.clone());
        }
        if guard.1.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
            return Err("redis unreachable (retrying shortly)".into());
        }
        guard.1 = Some(Instant::now());
        let client = self.client.clone()?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            OP_TIMEOUT * 2,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| "redis connect timed out".to_string())?
        .map_err(|e| format!("redis connect failed: {e}"))?;
        guard.0 = Some(conn.clone());
        Ok(conn)
    }

    /// Counts one call; its position in the window (1 for the first call), which
    /// exceeds `limit.calls` when the call is refused. Checks take their position
    /// from the thread's block of the org when there is one; concurrent calls of one
    /// org on one thread share a script call (`batch.rs`).
    pub(super) async fn incr(
        &self,
        org: &str,
        limit: Limit,
        window: u64,
        ttl: Duration,
    ) -> Result<u64, String> {
        let slot = self.slot();
        let key = format!(
            "{}:quota:{}:{}:{}",
            self.prefix,
            org,
            limit.per.name(),
            window
        );
        if let Some(position) = slot.blocks.take(&key, 1) {
            return Ok(position);
        }
        let ttl_ms = ttl.as_millis() as u64 + 5_000;
        slot.batches
            .count(&key, |n| self.add(&slot, &key, n, ttl_ms, limit.calls))
            .await
    }

    /// Counts `n` calls under `key` (from the thread's block if it has enough left,
    /// else in Redis, taking a new block when the org is busy); the last position.
    async fn add(
        &self,
        slot: &Slot,
        key: &str,
        n: u64,
        ttl_ms: u64,
        limit: u64,
    ) -> Result<u64, String> {
        if let Some(last) = slot.blocks.take(key, n) {
            return Ok(last);
        }
        // A block is worth taking when checks of the org queue up on this thread.
        let block = if n > 1 && !slot.blocks.has(key) {
            blocks::size(self.reserve, limit)
        } else {
            0
        };
        let mut conn = self.connection(slot).await?;
        let mut invocation = self.script.key(key);
        invocation
            .arg(ttl_ms)
            .arg(n)
            .arg(limit)
            .arg(block)
            .arg(blocks::ceiling(limit));
        let (total, reserved) = match tokio::time::timeout(
            OP_TIMEOUT,
            invocation.invoke_async::<(u64, u64)>(&mut conn),
        )
        .await
        {
            Ok(Ok(counted)) => counted,
            Ok(Err(e)) => return Err(format!("redis error: {e}")),
            Err(_) => return Err("redis did not answer in time".into()),
        };
        if reserved > 0 {
            let id = slot.blocks.insert(key, total + 1, total + reserved);
            let (slot, key, release) = (slot.clone(), key.to_string(), self.release.clone());
            tokio::spawn(async move {
                tokio::time::sleep(LEASE).await;
                let unused = slot.blocks.expire(&key, id);
                if unused > 0 {
                    give_back(&mut conn, &release, &key, unused).await;
                }
            });
        }
        Ok(total)
    }

    pub(super) async fn ping(&self) -> bool {
        let Ok(mut conn) = self.connection(&self.slot()).await else {
            return false;
        };
        let cmd = redis::cmd("PING");
        matches!(
            tokio::time::timeout(OP_TIMEOUT, cmd.query_async::<String>(&mut conn)).await,
            Ok(Ok(_))
        )
    }
}

/// Returns `unused` reserved calls to `key`'s counter. If Redis cannot be reached they
/// stay counted until the window ends (logged).
async fn give_back(conn: &mut ConnectionManager, release: &redis::Script, key: &str, unused: u64) {
    let mut invocation = release.key(key);
    invocation.arg(unused);
    match tokio::time::timeout(OP_TIMEOUT, invocation.invoke_async::<i64>(conn)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(key, unused, error = %e, "could not give back reserved quota calls")
        }
        Err(_) => tracing::warn!(
            key,
            unused,
            "could not give back reserved quota calls: timeout"
        ),
    }
}
