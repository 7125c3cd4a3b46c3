//! The two databases the state store runs on, behind one small interface: statements
//! written once with `$1`-style placeholders, parameters that are text or integers,
//! rows read as text (the statements cast their integers). SQLite (rusqlite, one
//! connection owned by one thread of its own, `portcullis-state`, so no runtime's
//! blocking pool is borrowed) for one gateway; PostgreSQL (tokio-postgres, one
//! connection, re-opened after a failure) for a fleet.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One statement parameter.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

impl From<&str> for Param {
    fn from(s: &str) -> Param {
        Param::Text(s.to_string())
    }
}

impl From<String> for Param {
    fn from(s: String) -> Param {
        Param::Text(s)
    }
}

impl From<i64> for Param {
    fn from(n: i64) -> Param {
        Param::Int(n)
    }
}

/// A row: each column as text (`None` for NULL).
pub(crate) type Row = Vec<Option<String>>;

/// One statement of a transaction.
pub(crate) type Statement = (&'static str, Vec<Param>);

/// Work for the SQLite thread.
type Job = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

pub(crate) enum Db {
    /// Jobs for the thread that owns the connection.
    Sqlite(mpsc::Sender<Job>),
    Postgres(Box<Pg>),
}

/// A PostgreSQL store: where to connect, and the connection while it is open.
pub(crate) struct Pg {
    config: tokio_postgres::Config,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl Db {
    /// Opens (creates) a SQLite file in WAL mode and runs `schema`.
    pub(crate) fn sqlite(path: &Path, schema: &str) -> anyhow::Result<Db> {
        let ctx = || format!("state.path: cannot open SQLite database {}", path.display());
        let conn = rusqlite::Connection::open(path).with_context(ctx)?;
        conn.busy_timeout(BUSY_TIMEOUT).with_context(ctx)?;
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .with_context(ctx)?;
        conn.execute_batch(schema).with_context(ctx)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("portcullis-state".into())
            .spawn(move || {
                let mut conn = conn;
                // Ends when the store (every sender) is dropped.
                for job in rx {
                    job(&mut conn);
                }
            })
            .context("state store: starting its thread")?;
        Ok(Db::Sqlite(tx))
    }

    /// Runs `f` on the SQLite thread; its result.
    async fn on_sqlite<T: Send + 'static>(
        jobs: &mpsc::Sender<Job>,
        f: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        jobs.send(job)
            .map_err(|_| anyhow::anyhow!("state store thread has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("state store thread has stopped"))?
    }

    /// A PostgreSQL store, connected (and `schema` run) on first use.
    pub(crate) fn postgres(url: &str) -> anyhow::Result<Db> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("state.postgres_url: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(Db::Postgres(Box::new(Pg {
            config,
            client: tokio::sync::Mutex::new(None),
        })))
    }

    /// Runs statements in one transaction; the rows each changed.
    pub(crate) async fn transaction(
        &self,
        schema: &'static str,
        statements: Vec<Statement>,
    ) -> anyhow::Result<Vec<u64>> {
        match self {
            Db::Sqlite(jobs) => {
                Db::on_sqlite(jobs, move |conn| {
                    let tx =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let mut changed = Vec::with_capacity(statements.len());
                    for (sql, params) in &statements {
                        let mut stmt = tx.prepare_cached(&sqlite_sql(sql))?;
                        changed.push(
                            stmt.execute(rusqlite::params_from_iter(
                                params.iter().map(sqlite_param),
                            ))? as u64,
                        );
                    }
                    tx.commit()?;
                    Ok(changed)
                })
                .await
            }
            Db::Postgres(pg) => {
                pg.with_client(schema, async |c| {
                    let tx = c.transaction().await?;
                    let mut changed = Vec::with_capacity(statements.len());
                    for (sql, params) in &statements {
                        changed.push(tx.execute(*sql, &pg_params(params)).await?);
                    }
                    tx.commit().await?;
                    Ok(changed)
                })
                .await
            }
        }
    }

    /// Runs one query; its rows.
    pub(crate) async fn query(
        &self,
        schema: &'static str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> anyhow::Result<Vec<Row>> {
        match self {
            Db::Sqlite(jobs) => {
                Db::on_sqlite(jobs, move |conn| {
                    let mut stmt = conn.prepare_cached(&sqlite_sql(sql))?;
                    let n = stmt.column_count();
                    let rows = stmt.query_map(
                        rusqlite::params_from_iter(params.iter().map(sqlite_param)),
                        |r| (0..n).map(|i| r.get::<_, Option<String>>(i)).collect(),
                    )?;
                    Ok(rows.collect::<Result<Vec<Row>, _>>()?)
                })
                .await
            }
            Db::Postgres(pg) => {
                pg.with_client(schema, async |c| {
                    let rows = c.query(sql, &pg_params(&params)).await?;
                    Ok(rows
                        .iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| r.get::<_, Option<String>>(i))
                                .collect()
                        })
                        .collect())
                })
                .await
            }
        }
    }
}

impl Pg {
    /// Runs `f` on the open connection (opened first if there is none); a failure
    /// drops the connection, so the next call opens a fresh one.
    async fn with_client<T>(
        &self,
        schema: &str,
        f: impl AsyncFnOnce(&mut tokio_postgres::Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut guard = self.client.lock().await;
        let result = match connect(&self.config, &mut guard, schema).await {
            Ok(client) => f(client).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            *guard = None;
        }
        result
    }
}

/// SQLite numbers parameters `?1`; the statements are written `$1`.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

fn sqlite_param(p: &Param) -> rusqlite::types::Value {
    match p {
        Param::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Param::Int(n) => rusqlite::types::Value::Integer(*n),
    }
}

fn pg_params(params: &[Param]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(s) => s as &(dyn tokio_postgres::types::ToSql + Sync),
            Param::Int(n) => n as &(dyn tokio_postgres::types::ToSql + Sync),
        })
        .collect()
}

/// The open connection, opened (and the schema run) when there is none.
async fn connect<'a>(
    config: &tokio_postgres::Config,
    slot: &'a mut Option<tokio_postgres::Client>,
    schema: &str,
) -> anyhow::Result<&'a mut tokio_postgres::Client> {
    if slot.as_ref().is_some_and(|c| c.is_closed()) {
        *slot = None;
    }
    if slot.is_none() {
        let (client, connection) =
            tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| anyhow::anyhow!("state store: connecting timed out"))?
                .context("state store: connecting to PostgreSQL")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "state store PostgreSQL connection ended");
            }
        });
        // Two gateways creating the tables at once may collide; the second try sees
        // them made.
        if client.batch_execute(schema).await.is_err() {
            client
                .batch_execute(schema)
                .await
                .context("state store: creating its tables")?;
        }
        *slot = Some(client);
    }
    Ok(slot.as_mut().expect("just connected"))
}
