//! The PostgreSQL sink, for a fleet of gateways writing one table. `request_logs` and
//! its indexes are created when missing (in the first schema of the connection's
//! `search_path`; set it in the URL with `options=-csearch_path%3Dmyschema`). Each
//! batch is one `INSERT ... SELECT FROM UNNEST(...)` statement: one round trip, all or
//! nothing. A failed write drops the connection; the next attempt reconnects (and
//! re-creates the table if it went away). No TLS: use a local server or a tunnel.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::query::{Filter, Row, Value, where_clause};
use super::{BoxFuture, LOG_TARGET, Record, Sink};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS request_logs (
    id            BIGSERIAL PRIMARY KEY,
    time          TIMESTAMPTZ      NOT NULL,
    request_id    TEXT             NOT NULL,
    session_id    TEXT,
    org           TEXT             NOT NULL,
    agent         TEXT             NOT NULL,
    connector     TEXT,
    tool          TEXT,
    method        TEXT             NOT NULL,
    status        INTEGER          NOT NULL,
    rpc_code      BIGINT,
    latency_ms    DOUBLE PRECISION NOT NULL,
    policy        TEXT,
    policy_digest TEXT,
    reason        TEXT
);
CREATE INDEX IF NOT EXISTS request_logs_time ON request_logs (time);
CREATE INDEX IF NOT EXISTS request_logs_org_time ON request_logs (org, time);
CREATE INDEX IF NOT EXISTS request_logs_agent_time ON request_logs (agent, time);
CREATE INDEX IF NOT EXISTS request_logs_connector_time ON request_logs (connector, time);
CREATE INDEX IF NOT EXISTS request_logs_status_time ON request_logs (status, time);
";

const INSERT: &str = "INSERT INTO request_logs (time, request_id, session_id, org, agent, \
    connector, tool, method, status, rpc_code, latency_ms, policy, policy_digest, reason) \
    SELECT TIMESTAMPTZ 'epoch' + t * INTERVAL '1 millisecond', r, s, o, a, c, tl, m, st, rc, l, \
    p, pd, re FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], \
    $6::text[], $7::text[], $8::text[], $9::int4[], $10::int8[], $11::float8[], $12::text[], \
    $13::text[], $14::text[]) AS u(t, r, s, o, a, c, tl, m, st, rc, l, p, pd, re)";

pub(super) struct PgSink {
    config: Config,
    conn: Option<(Client, Statement)>,
    name: String,
}

impl PgSink {
    /// Parses the URL and tries to connect once; an unreachable server is logged and
    /// left to the writer's retries.
    pub(super) async fn start(url: &str) -> anyhow::Result<PgSink> {
        let config = parse(url)?;
        let mut sink = PgSink {
            name: describe(&config),
            config,
            conn: None,
        };
        if let Err(e) = sink.connect().await {
            tracing::error!(
                target: LOG_TARGET,
                sink = %sink.name,
                error = %format!("{e:#}"),
                "audit sink unavailable at start; rows are queued and the writer keeps retrying"
            );
        }
        Ok(sink)
    }

    async fn connect(&mut self) -> anyhow::Result<&(Client, Statement)> {
        if self.conn.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = open(&self.config).await?;
            client
                .batch_execute(SCHEMA)
                .await
                .context("creating request_logs")?;
            let insert = client
                .prepare(INSERT)
                .await
                .context("preparing the insert")?;
            tracing::info!(target: LOG_TARGET, sink = %self.name, "audit sink connected");
            self.conn = Some((client, insert));
        }
        Ok(self.conn.as_ref().expect("just connected"))
    }

    async fn insert(&mut self, rows: &[Record]) -> anyhow::Result<()> {
        let (client, insert) = self.connect().await?;
        let time: Vec<i64> = rows.iter().map(|r| r.time_ms as i64).collect();
        let text = |f: fn(&Record) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        let opt = |f: fn(&Record) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
        let status: Vec<i32> = rows.iter().map(|r| i32::from(r.status)).collect();
        let rpc_code: Vec<Option<i64>> = rows.iter().map(|r| r.rpc_code).collect();
        let latency: Vec<f64> = rows.iter().map(|r| r.latency_ms).collect();
        let (request_id, org, agent, method) = (
            text(|r| &r.request_id),
            text(|r| &r.org),
            text(|r| &r.agent),
            text(|r| &r.method),
        );
        let (session, connector, tool) = (
            opt(|r| r.session_id.as_deref()),
            opt(|r| r.connector.as_deref()),
            opt(|r| r.tool.as_deref()),
        );
        let (policy, digest, reason) = (
            opt(|r| r.policy.as_deref()),
            opt(|r| r.policy_digest.as_deref()),
            opt(|r| r.reason.as_deref()),
        );
        let params: [&(dyn ToSql + Sync); 14] = [
            &time,
            &request_id,
            &session,
            &org,
            &agent,
            &connector,
            &tool,
            &method,
            &status,
            &rpc_code,
            &latency,
            &policy,
            &digest,
            &reason,
        ];
        let n = client.execute(insert, &params).await?;
        anyhow::ensure!(
            n == rows.len() as u64,
            "inserted {n} rows of {}",
            rows.len()
        );
        Ok(())
    }
}

impl Sink for PgSink {
    fn write(&mut self, rows: Vec<Record>) -> BoxFuture<'_, (Vec<Record>, anyhow::Result<()>)> {
        Box::pin(async move {
            let result = self.insert(&rows).await;
            if result.is_err() {
                // Start afresh next time: reconnect, re-create the table if needed.
                self.conn = None;
            }
            (rows, result)
        })
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

fn parse(url: &str) -> anyhow::Result<Config> {
    let mut config: Config = url
        .parse()
        .map_err(|e| anyhow::anyhow!("audit.postgres_url: {e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

async fn open(config: &Config) -> anyhow::Result<Client> {
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| anyhow::anyhow!("connecting timed out after {CONNECT_TIMEOUT:?}"))?
        .context("connecting")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(target: LOG_TARGET, error = %e, "audit PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// `postgres://user@host:port/db` without the password.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// The newest rows matching `filter` (newest first).
pub(super) async fn query(url: &str, filter: &Filter) -> anyhow::Result<Vec<Row>> {
    let config = parse(url)?;
    let client = open(&config)
        .await
        .with_context(|| format!("audit sink {}", describe(&config)))?;
    let since = filter.since_ms.map(Value::Time);
    let (cond, values) = where_clause(filter, |n| format!("${n}"), since);
    let mut sql = format!(
        "SELECT id, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
         request_id, session_id, org, agent, connector, tool, method, status, rpc_code, \
         latency_ms, policy, policy_digest, reason FROM request_logs{cond} \
         ORDER BY time DESC, id DESC"
    );
    if filter.limit > 0 {
        sql.push_str(&format!(" LIMIT {}", filter.limit));
    }
    let params: Vec<Box<dyn ToSql + Sync + Send>> = values
        .into_iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                Value::Text(t) => Box::new(t),
                // The only integer filter is `status`, an INTEGER column.
                Value::Int(i) => Box::new(i32::try_from(i).unwrap_or(i32::MAX)),
                Value::Time(ms) => Box::new(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client
        .query(&sql, &refs)
        .await
        .context("reading request_logs")?;
    Ok(rows
        .iter()
        .map(|r| Row {
            id: r.get(0),
            time: r.get(1),
            request_id: r.get(2),
            session_id: r.get(3),
            org: r.get(4),
            agent: r.get(5),
            connector: r.get(6),
            tool: r.get(7),
            method: r.get(8),
            status: i64::from(r.get::<_, i32>(9)),
            rpc_code: r.get(10),
            latency_ms: r.get(11),
            policy: r.get(12),
            policy_digest: r.get(13),
            reason: r.get(14),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_without_the_password() {
        let c = parse("postgres://app:s3cret@db.internal:6543/audit").unwrap();
        let d = describe(&c);
        assert_eq!(d, "postgres://app@db.internal:6543/audit");
        assert!(!d.contains("s3cret"));
        assert!(parse("postgres://h/db?sslmode=bogus").is_err());
    }
}
