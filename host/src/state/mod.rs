//! The state store: what the gateway remembers across restarts and shares across a
//! fleet. Today that is tool pinning (`gateway::pinning`): which connectors were
//! approved, the pinned definition (sha256 and JSON text) of each of their tools, the
//! tools held for approval, and a revision per connector that every approval or
//! rejection bumps so the gateways of a fleet notice it. SQLite beside the config by
//! default, PostgreSQL (`[state] store = "postgres"`) for a fleet (`db`).

mod db;

use std::collections::HashMap;

use db::{Db, Param, Row, Statement};

use crate::config::StateSettings;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS portcullis_connector_approvals (
    connector   TEXT   PRIMARY KEY,
    token       TEXT   NOT NULL,
    approved_ms BIGINT NOT NULL,
    revision    BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS portcullis_tool_pins (
    connector  TEXT   NOT NULL,
    tool       TEXT   NOT NULL,
    sha256     TEXT   NOT NULL,
    definition TEXT   NOT NULL,
    pinned_ms  BIGINT NOT NULL,
    PRIMARY KEY (connector, tool)
);
CREATE TABLE IF NOT EXISTS portcullis_tools_held (
    connector  TEXT   NOT NULL,
    tool       TEXT   NOT NULL,
    sha256     TEXT   NOT NULL,
    definition TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    rejected   BIGINT NOT NULL,
    since_ms   BIGINT NOT NULL,
    PRIMARY KEY (connector, tool)
);
";

/// A pinned tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pin {
    pub tool: String,
    pub sha256: String,
    /// The definition's JSON text as the upstream sent it when it was pinned.
    pub definition: String,
}

/// A connector's approval: its pins and the revision they belong to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Approval {
    pub revision: i64,
    pub pins: HashMap<String, Pin>,
}

/// Why a tool is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeldReason {
    /// Not pinned: added upstream after the connector was approved.
    New,
    /// Pinned, but its definition changed (quarantined).
    Changed,
}

impl HeldReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HeldReason::New => "new",
            HeldReason::Changed => "changed",
        }
    }

    fn parse(s: &str) -> HeldReason {
        if s == "changed" {
            HeldReason::Changed
        } else {
            HeldReason::New
        }
    }
}

/// A tool held for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub connector: String,
    pub tool: String,
    pub sha256: String,
    pub definition: String,
    pub reason: HeldReason,
    /// An operator rejected this definition: still withheld, no longer reported.
    pub rejected: bool,
    pub since_ms: i64,
}

pub(crate) struct StateStore {
    db: Db,
}

impl StateStore {
    /// Opens the store `[state]` names: a SQLite file is created now (an error
    /// refuses the start); a PostgreSQL store connects on first use.
    pub(crate) fn open(settings: &StateSettings) -> anyhow::Result<StateStore> {
        let db = match settings {
            StateSettings::Sqlite { path } => Db::sqlite(path, SCHEMA)?,
            StateSettings::Postgres { url } => Db::postgres(url)?,
        };
        Ok(StateStore { db })
    }

    async fn query(&self, sql: &'static str, params: Vec<Param>) -> anyhow::Result<Vec<Row>> {
        self.db.query(SCHEMA, sql, params).await
    }

    async fn transaction(&self, statements: Vec<Statement>) -> anyhow::Result<Vec<u64>> {
        self.db.transaction(SCHEMA, statements).await
    }

    /// A connector's approval, if it was approved.
    pub(crate) async fn approval(&self, connector: &str) -> anyhow::Result<Option<Approval>> {
        let rows = self
            .query(
                "SELECT CAST(revision AS TEXT) FROM portcullis_connector_approvals WHERE connector = $1",
                vec![connector.into()],
            )
            .await?;
        let Some(revision) = rows.first().and_then(|r| int(&r[0])) else {
            return Ok(None);
        };
        let pins = self
            .query(
                "SELECT tool, sha256, definition FROM portcullis_tool_pins WHERE connector = $1",
                vec![connector.into()],
            )
            .await?
            .into_iter()
            .map(|r| {
                let pin = Pin {
                    tool: text(&r[0]),
                    sha256: text(&r[1]),
                    definition: text(&r[2]),
                };
                (pin.tool.clone(), pin)
            })
            .collect();
        Ok(Some(Approval { revision, pins }))
    }

    /// Approves a connector with `pins` unless it already is (another gateway of the
    /// fleet may have been first); the approval that holds afterwards.
    pub(crate) async fn approve_first(
        &self,
        connector: &str,
        pins: Vec<Pin>,
    ) -> anyhow::Result<Approval> {
        let token = token();
        let now = now_ms();
        let mut statements: Vec<Statement> = vec![(
            "INSERT INTO portcullis_connector_approvals (connector, token, approved_ms, revision) \
             VALUES ($1, $2, $3, 1) ON CONFLICT (connector) DO NOTHING",
            vec![connector.into(), token.clone().into(), now.into()],
        )];
        for pin in pins {
            statements.push((
                "INSERT INTO portcullis_tool_pins (connector, tool, sha256, definition, pinned_ms) \
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM portcullis_connector_approvals \
                 WHERE connector = $1 AND token = $6) ON CONFLICT (connector, tool) DO NOTHING",
                vec![
                    connector.into(),
                    pin.tool.into(),
                    pin.sha256.into(),
                    pin.definition.into(),
                    now.into(),
                    token.clone().into(),
                ],
            ));
        }
        self.transaction(statements).await?;
        self.approval(connector)
            .await?
            .ok_or_else(|| anyhow::anyhow!("connector {connector}: approval not stored"))
    }

    /// Records a held tool; `true` when this definition was not held before (the
    /// caller reports it then, once for the whole fleet).
    pub(crate) async fn hold(&self, held: &Held) -> anyhow::Result<bool> {
        let changed = self
            .transaction(vec![(
                "INSERT INTO portcullis_tools_held (connector, tool, sha256, definition, reason, rejected, since_ms) \
                 VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (connector, tool) DO UPDATE SET \
                 sha256 = excluded.sha256, definition = excluded.definition, reason = excluded.reason, \
                 rejected = 0, since_ms = excluded.since_ms \
                 WHERE portcullis_tools_held.sha256 <> excluded.sha256",
                vec![
                    held.connector.clone().into(),
                    held.tool.clone().into(),
                    held.sha256.clone().into(),
                    held.definition.clone().into(),
                    held.reason.as_str().into(),
                    held.since_ms.into(),
                ],
            )])
            .await?;
        Ok(changed.first().copied().unwrap_or(0) > 0)
    }

    /// Forgets held entries that no longer apply (the tool is served as pinned again,
    /// or the upstream stopped listing it).
    pub(crate) async fn release(&self, connector: &str, tools: &[String]) -> anyhow::Result<()> {
        if tools.is_empty() {
            return Ok(());
        }
        let statements = tools
            .iter()
            .map(|t| {
                (
                    "DELETE FROM portcullis_tools_held WHERE connector = $1 AND tool = $2",
                    vec![connector.into(), t.clone().into()],
                )
            })
            .collect();
        self.transaction(statements).await.map(|_| ())
    }

    /// Held tools (of one connector, or all), rejected ones included.
    pub(crate) async fn held(&self, connector: Option<&str>) -> anyhow::Result<Vec<Held>> {
        let rows = match connector {
            Some(c) => {
                self.query(
                    "SELECT connector, tool, sha256, definition, reason, CAST(rejected AS TEXT), \
                     CAST(since_ms AS TEXT) FROM portcullis_tools_held WHERE connector = $1 \
                     ORDER BY connector, tool",
                    vec![c.into()],
                )
                .await?
            }
            None => {
                self.query(
                    "SELECT connector, tool, sha256, definition, reason, CAST(rejected AS TEXT), \
                     CAST(since_ms AS TEXT) FROM portcullis_tools_held ORDER BY connector, tool",
                    vec![],
                )
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|r| Held {
                connector: text(&r[0]),
                tool: text(&r[1]),
                sha256: text(&r[2]),
                definition: text(&r[3]),
                reason: HeldReason::parse(&text(&r[4])),
                rejected: int(&r[5]).unwrap_or(0) != 0,
                since_ms: int(&r[6]).unwrap_or(0),
            })
            .collect())
    }

    /// Pins the given held definitions and drops the pins of `gone` tools; bumps the connector's revision.
    pub(crate) async fn approve(
        &self,
        connector: &str,
        held: &[Held],
        gone: &[String],
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let mut statements: Vec<Statement> = Vec::new();
        for h in held {
            statements.push((
                "INSERT INTO portcullis_tool_pins (connector, tool, sha256, definition, pinned_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (connector, tool) DO UPDATE SET \
                 sha256 = excluded.sha256, definition = excluded.definition, pinned_ms = excluded.pinned_ms",
                vec![
                    connector.into(),
                    h.tool.clone().into(),
                    h.sha256.clone().into(),
                    h.definition.clone().into(),
                    now.into(),
                ],
            ));
            statements.push((
                "DELETE FROM portcullis_tools_held WHERE connector = $1 AND tool = $2 AND sha256 = $3",
                vec![connector.into(), h.tool.clone().into(), h.sha256.clone().into()],
            ));
        }
        for tool in gone {
            statements.push((
                "DELETE FROM portcullis_tool_pins WHERE connector = $1 AND tool = $2",
                vec![connector.into(), tool.clone().into()],
            ));
        }
        statements.push(bump(connector));
        self.transaction(statements).await.map(|_| ())
    }

    /// Marks held definitions rejected (still withheld, no longer reported until
    /// they change again); bumps the connector's revision.
    pub(crate) async fn reject(&self, connector: &str, held: &[Held]) -> anyhow::Result<()> {
        let mut statements: Vec<Statement> = held
            .iter()
            .map(|h| {
                (
                    "UPDATE portcullis_tools_held SET rejected = 1 \
                     WHERE connector = $1 AND tool = $2 AND sha256 = $3",
                    vec![
                        connector.into(),
                        h.tool.clone().into(),
                        h.sha256.clone().into(),
                    ],
                )
            })
            .collect();
        statements.push(bump(connector));
        self.transaction(statements).await.map(|_| ())
    }

    /// Every approved connector's revision.
    pub(crate) async fn revisions(&self) -> anyhow::Result<HashMap<String, i64>> {
        let rows = self
            .query(
                "SELECT connector, CAST(revision AS TEXT) FROM portcullis_connector_approvals",
                vec![],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((text(&r[0]), int(&r[1])?)))
            .collect())
    }
}

fn bump(connector: &str) -> Statement {
    (
        "UPDATE portcullis_connector_approvals SET revision = revision + 1 WHERE connector = $1",
        vec![connector.into()],
    )
}

fn text(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

fn int(v: &Option<String>) -> Option<i64> {
    v.as_deref()?.parse().ok()
}

/// A random token naming one approval attempt.
fn token() -> String {
    let mut raw = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    hex::encode(raw)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
