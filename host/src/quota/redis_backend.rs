//! The Redis quota backend, shared by a fleet of gateways. One Lua script call per check
//! (or per batch of concurrent checks, `batch.rs`) increments the org's window counter
//! and sets its expiry atomically, so N gateways sharing one Redis admit exactly
//! `calls` calls per window. Each thread has its own connection (a multiplexed
//! connection is driven by a task on the runtime that made it; one per worker keeps a
//! check on the thread of its request). Connections are made lazily and re-made after
//! failures (at most one attempt per second and thread), so the gateway starts and
//! keeps serving while Redis is down.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::Window;
use super::batch::Batcher;

const OP_TIMEOUT: Duration = Duration::from_millis(1000);
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// Adds ARGV[2] calls (a batch, see `batch.rs`) to the window's counter; the key
/// expires with its window.
const SCRIPT: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
if n == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
";

pub struct Redis {
    client: Result<redis::Client, String>,
    prefix: String,
    script: redis::Script,
    conns: std::sync::Mutex<HashMap<ThreadId, Slot>>,
}

/// A thread's connection (and when it last tried to connect) and its batches.
type Slot = Arc<PerThread>;

#[derive(Default)]
struct PerThread {
    conn: Mutex<(Option<ConnectionManager>, Option<Instant>)>,
    batches: Batcher,
}

impl Redis {
    pub fn new(url: &str, prefix: &str) -> Redis {
        Redis {
            client: redis::Client::open(url).map_err(|e| e.to_string()),
            prefix: prefix.to_string(),
            script: redis::Script::new(SCRIPT),
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

    /// Counts one call; the number of calls in the window so far, this one included.
    /// Concurrent calls of one org on one thread share a script call (`batch.rs`).
    pub async fn incr(
        &self,
        org: &str,
        per: Window,
        window: u64,
        ttl: Duration,
    ) -> Result<u64, String> {
        let slot = self.slot();
        let key = format!("{}:quota:{}:{}:{}", self.prefix, org, per.name(), window);
        let ttl_ms = ttl.as_millis() as u64 + 5_000;
        slot.batches
            .count(&key, |n| self.add(&slot, &key, n, ttl_ms))
            .await
    }

    /// Adds `n` calls to `key`'s counter; the new total.
    async fn add(&self, slot: &PerThread, key: &str, n: u64, ttl_ms: u64) -> Result<u64, String> {
        let mut conn = self.connection(slot).await?;
        let mut invocation = self.script.key(key);
        invocation.arg(ttl_ms).arg(n);
        match tokio::time::timeout(OP_TIMEOUT, invocation.invoke_async::<u64>(&mut conn)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(format!("redis error: {e}")),
            Err(_) => Err("redis did not answer in time".into()),
        }
    }

    pub async fn ping(&self) -> bool {
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
