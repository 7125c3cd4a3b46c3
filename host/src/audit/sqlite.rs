//! The SQLite sink (the embedded default): one file, WAL mode, `synchronous = NORMAL`,
//! the `request_logs` table and its one index, on `time`, created on open. Every index
//! costs every row a B-tree insert (~1.5-2.5 us here) paid on the gateway's own cores,
//! so filters on org, agent, connector or status read the rows newest first through the
//! time index (bounded by `--since` and the row limit) instead of having indexes of
//! their own; the org and agent indexes of earlier versions are dropped on open.
//! PostgreSQL, a server of its own, indexes all five. `time` is stored as
//! RFC 3339 text in UTC with milliseconds (fixed width, so it sorts and compares in
//! time order). Batches are written on Tokio's blocking pool, one immediate
//! transaction each; a lock held elsewhere is waited on for up to 5 s, then retried
//! by the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params, params_from_iter};

use super::query::{Filter, Row, Value, where_clause};
use super::{BoxFuture, Record, Sink};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS request_logs (
    id            INTEGER PRIMARY KEY,
    time          TEXT    NOT NULL,
    request_id    TEXT    NOT NULL,
    session_id    TEXT,
    org           TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    connector     TEXT,
    tool          TEXT,
    method        TEXT    NOT NULL,
    status        INTEGER NOT NULL,
    rpc_code      INTEGER,
    latency_ms    REAL    NOT NULL,
    policy        TEXT,
    policy_digest TEXT,
    reason        TEXT
);
CREATE INDEX IF NOT EXISTS request_logs_time ON request_logs (time);
DROP INDEX IF EXISTS request_logs_org_time;
DROP INDEX IF EXISTS request_logs_agent_time;
";

const INSERT: &str = "INSERT INTO request_logs (time, request_id, session_id, org, agent, \
    connector, tool, method, status, rpc_code, latency_ms, policy, policy_digest, reason) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

pub(super) struct SqliteSink {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteSink {
    /// Opens (or creates) the database, switches it to WAL and creates the table.
    pub(super) fn open(path: &Path) -> anyhow::Result<SqliteSink> {
        let ctx = || format!("audit.path: cannot open SQLite database {}", path.display());
        let conn = Connection::open(path).with_context(ctx)?;
        conn.busy_timeout(BUSY_TIMEOUT).with_context(ctx)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .with_context(ctx)?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!(
                "audit.path: SQLite database {} refused WAL mode (journal_mode is {mode})",
                path.display()
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .with_context(ctx)?;
        conn.execute_batch(SCHEMA).with_context(ctx)?;
        Ok(SqliteSink {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }
}

impl Sink for SqliteSink {
    /// Inserts on a blocking thread. The rows are lent to it, not copied, and come
    /// back whatever happens there (an error, a panic, the task never running).
    fn write(&mut self, rows: Vec<Record>) -> BoxFuture<'_, (Vec<Record>, anyhow::Result<()>)> {
        let conn = self.conn.clone();
        Box::pin(async move {
            let lent = Arc::new(Mutex::new(rows));
            let batch = lent.clone();
            let task = tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                let rows = batch.lock().unwrap_or_else(|e| e.into_inner());
                insert(&mut conn, &rows)
            });
            let result = match task.await {
                Ok(inserted) => inserted,
                Err(e) => Err(anyhow::Error::new(e).context("audit writer task")),
            };
            let rows = std::mem::take(&mut *lent.lock().unwrap_or_else(|e| e.into_inner()));
            (rows, result)
        })
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}

fn insert(conn: &mut Connection, rows: &[Record]) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        for r in rows {
            stmt.execute(params![
                super::time::format_ms(r.time_ms),
                r.request_id,
                r.session_id,
                r.org,
                r.agent,
                r.connector,
                r.tool,
                r.method,
                i64::from(r.status),
                r.rpc_code,
                r.latency_ms,
                r.policy,
                r.policy_digest,
                r.reason,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The newest rows matching `filter` (newest first).
pub(super) fn query(path: &Path, filter: &Filter) -> anyhow::Result<Vec<Row>> {
    if !path.exists() {
        anyhow::bail!(
            "no audit database at {} (audit.path); the gateway creates it when it starts",
            path.display()
        );
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let since = filter
        .since_ms
        .map(|ms| Value::Text(super::time::format_ms(ms)));
    let (cond, values) = where_clause(filter, |n| format!("?{n}"), since);
    let mut sql = format!(
        "SELECT id, time, request_id, session_id, org, agent, connector, tool, method, status, \
         rpc_code, latency_ms, policy, policy_digest, reason FROM request_logs{cond} \
         ORDER BY time DESC, id DESC"
    );
    if filter.limit > 0 {
        sql.push_str(&format!(" LIMIT {}", filter.limit));
    }
    let params = values.into_iter().map(|v| match v {
        Value::Text(t) => rusqlite::types::Value::Text(t),
        Value::Int(i) => rusqlite::types::Value::Integer(i),
        Value::Time(ms) => rusqlite::types::Value::Text(super::time::format_ms(ms)),
    });
    let mut stmt = conn
        .prepare(&sql)
        .with_context(|| format!("reading request_logs in {}", path.display()))?;
    let rows = stmt
        .query_map(params_from_iter(params), |r| {
            Ok(Row {
                id: r.get(0)?,
                time: r.get(1)?,
                request_id: r.get(2)?,
                session_id: r.get(3)?,
                org: r.get(4)?,
                agent: r.get(5)?,
                connector: r.get(6)?,
                tool: r.get(7)?,
                method: r.get(8)?,
                status: r.get(9)?,
                rpc_code: r.get(10)?,
                latency_ms: r.get(11)?,
                policy: r.get(12)?,
                policy_digest: r.get(13)?,
                reason: r.get(14)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::writer::tests::record;

    fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-audit-{name}-{}-{}",
            std::process::id(),
            crate::audit::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("audit.db")
    }

    #[tokio::test]
    async fn creates_a_wal_database_and_reads_rows_back_with_filters() {
        let path = temp_db("roundtrip");
        let mut sink = SqliteSink::open(&path).unwrap();
        let mut rows: Vec<Record> = (0..10).map(record).collect();
        rows[3].status = 404;
        rows[3].agent = "other".into();
        rows[3].rpc_code = Some(-32601);
        rows[3].reason = Some("no such tool".into());
        sink.write(rows).await.1.unwrap();
        // Reopening is fine (the schema statements are idempotent).
        drop(SqliteSink::open(&path).unwrap());

        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let mut indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'request_logs'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        indexes.sort();
        assert_eq!(
            indexes,
            ["request_logs_time"],
            "the one index of the module doc, no more"
        );

        let all = query(&path, &Filter::default()).unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[0].request_id, "req-9", "newest first");
        assert_eq!(all[9].time, "2023-11-14T22:13:20.000Z");
        let f = Filter {
            status: Some(404),
            ..Filter::default()
        };
        let hit = query(&path, &f).unwrap();
        assert_eq!(hit.len(), 1);
        assert_eq!(
            (
                hit[0].agent.as_str(),
                hit[0].rpc_code,
                hit[0].reason.as_deref()
            ),
            ("other", Some(-32601), Some("no such tool"))
        );
        let f = Filter {
            agent: Some("agent".into()),
            since_ms: Some(1_700_000_000_005),
            limit: 3,
            ..Filter::default()
        };
        let ids: Vec<String> = query(&path, &f)
            .unwrap()
            .into_iter()
            .map(|r| r.request_id)
            .collect();
        assert_eq!(ids, ["req-9", "req-8", "req-7"]);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_hands_the_rows_back_for_the_retry() {
        let path = temp_db("retry");
        let mut sink = SqliteSink::open(&path).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("DROP TABLE request_logs").unwrap();
        let rows: Vec<Record> = (0..5).map(record).collect();
        let (back, result) = sink.write(rows).await;
        assert!(result.is_err(), "the table is gone");
        let ids: Vec<&str> = back.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["req-0", "req-1", "req-2", "req-3", "req-4"]);
        other.execute_batch(SCHEMA).unwrap();
        let (back, result) = sink.write(back).await;
        result.unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(query(&path, &Filter::default()).unwrap().len(), 5);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_missing_database_is_a_clear_error() {
        let err = query(Path::new("/nonexistent/audit.db"), &Filter::default()).unwrap_err();
        assert!(err.to_string().contains("no audit database"), "{err}");
    }
}
