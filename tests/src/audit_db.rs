//! The audit tests' databases: a throwaway PostgreSQL schema on the machine's
//! server (127.0.0.1:5432, database `test`, trust auth), and direct reads of the
//! `request_logs` table in SQLite and PostgreSQL.

use std::path::Path;
use std::time::Duration;

/// The local PostgreSQL the tests use.
pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: u16 = 5432;
pub const PG_DB: &str = "test";

async fn pg_connect(user: &str, schema: Option<&str>) -> Result<tokio_postgres::Client, String> {
    let mut url = format!("postgres://{user}@{PG_HOST}:{PG_PORT}/{PG_DB}?connect_timeout=5");
    if let Some(s) = schema {
        url.push_str(&format!("&options=-csearch_path%3D{s}"));
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("{user}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A schema of its own (`pc_test_<random>`) in the `test` database, dropped (with its
/// tables) when this drops. Gateways reach it through [`PgSchema::url`].
pub struct PgSchema {
    pub name: String,
    pub user: String,
}

impl PgSchema {
    /// Picks the user that trust auth lets in (`postgres`, else `root`) and a fresh
    /// schema name; creates the schema unless `create` is false.
    pub async fn new(create: bool) -> PgSchema {
        use rand::Rng;
        let name = format!("pc_test_{:016x}", rand::rng().random::<u64>());
        let mut errors = Vec::new();
        for user in ["postgres", "root"] {
            match pg_connect(user, None).await {
                Ok(client) => {
                    let schema = PgSchema {
                        name,
                        user: user.to_string(),
                    };
                    if create {
                        schema.create_with(&client).await;
                    }
                    return schema;
                }
                Err(e) => errors.push(e),
            }
        }
        panic!(
            "PostgreSQL at {PG_HOST}:{PG_PORT}/{PG_DB} is needed for this test and refused \
             both users: {errors:?}"
        );
    }

    async fn create_with(&self, client: &tokio_postgres::Client) {
        client
            .batch_execute(&format!("CREATE SCHEMA {}", self.name))
            .await
            .expect("CREATE SCHEMA");
    }

    /// Creates the schema (for a test that starts without it).
    pub async fn create(&self) {
        let client = pg_connect(&self.user, None).await.expect("connect");
        self.create_with(&client).await;
    }

    /// The gateway's `postgres_url`: this schema first on the search path.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}@{PG_HOST}:{PG_PORT}/{PG_DB}?options=-csearch_path%3D{}",
            self.user, self.name
        )
    }

    /// A client whose search path is this schema.
    pub async fn client(&self) -> tokio_postgres::Client {
        pg_connect(&self.user, Some(&self.name))
            .await
            .expect("connect to PostgreSQL")
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (user, name) = (self.user.clone(), self.name.clone());
        // Its own thread and runtime: this may run inside (or outside) a test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(client) = pg_connect(&user, None).await {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// `SELECT count(*) FROM request_logs WHERE <cond>` on a SQLite database.
pub fn sqlite_count(db: &Path, cond: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open audit.db");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(
        &format!("SELECT count(*) FROM request_logs WHERE {cond}"),
        [],
        |r| r.get(0),
    )
    .expect("count rows")
}

/// `(method, status, agent, count)` over the whole table, sorted.
pub fn sqlite_groups(db: &Path) -> Vec<(String, i64, String, i64)> {
    let conn = rusqlite::Connection::open(db).expect("open audit.db");
    let mut stmt = conn
        .prepare(
            "SELECT method, status, agent, count(*) FROM request_logs \
             GROUP BY method, status, agent ORDER BY method, status, agent",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The same grouping in PostgreSQL.
pub async fn pg_groups(client: &tokio_postgres::Client) -> Vec<(String, i64, String, i64)> {
    client
        .query(
            "SELECT method, status::int8, agent, count(*) FROM request_logs \
             GROUP BY method, status, agent ORDER BY method, status, agent",
            &[],
        )
        .await
        .expect("group rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}
