//! The Redis quota backend, shared by a fleet of gateways. One Lua script per check
//! increments the org's window counter and sets its expiry atomically, so N gateways
//! sharing one Redis admit exactly `calls` calls per window. The connection is made
//! lazily and re-made after failures (at most one attempt per second), so the gateway
//! starts and keeps serving while Redis is down.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::Window;

const OP_TIMEOUT: Duration = Duration::from_millis(1000);
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

const SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
";

pub struct Redis {
    client: Result<redis::Client, String>,
    prefix: String,
    script: redis::Script,
    conn: Mutex<(Option<ConnectionManager>, Option<Instant>)>,
}

impl Redis {
    pub fn new(url: &str, prefix: &str) -> Redis {
        Redis {
            client: redis::Client::open(url).map_err(|e| e.to_string()),
            prefix: prefix.to_string(),
            script: redis::Script::new(SCRIPT),
            conn: Mutex::new((None, None)),
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut guard = self.conn.lock().await;
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

    /// Counts one call; the number of calls in the window so far.
    pub async fn incr(
        &self,
        org: &str,
        per: Window,
        window: u64,
        ttl: Duration,
    ) -> Result<u64, String> {
        let mut conn = self.connection().await?;
        let key = format!("{}:quota:{}:{}:{}", self.prefix, org, per.name(), window);
        let ttl_ms = ttl.as_millis() as u64 + 5_000;
        let mut invocation = self.script.key(key);
        invocation.arg(ttl_ms);
        match tokio::time::timeout(OP_TIMEOUT, invocation.invoke_async::<u64>(&mut conn)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(format!("redis error: {e}")),
            Err(_) => Err("redis did not answer in time".into()),
        }
    }

    pub async fn ping(&self) -> bool {
        let Ok(mut conn) = self.connection().await else {
            return false;
        };
        let cmd = redis::cmd("PING");
        matches!(
            tokio::time::timeout(OP_TIMEOUT, cmd.query_async::<String>(&mut conn)).await,
            Ok(Ok(_))
        )
    }
}
