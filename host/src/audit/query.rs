//! `portcullis audit query`: read `request_logs` from the configured sink with filters
//! (org, agent, connector, status, since), newest `limit` rows, printed oldest first as
//! an aligned table or as JSON (an array with one row object per line).

use serde::Serialize;

use crate::config::{AuditSettings, SinkSettings};

/// Which rows to read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub org: Option<String>,
    pub agent: Option<String>,
    pub connector: Option<String>,
    pub status: Option<u16>,
    /// Unix milliseconds: rows whose `time` is at or after this.
    pub since_ms: Option<u64>,
    /// The newest `limit` matching rows; 0 means all.
    pub limit: usize,
}

/// One stored row, as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Row {
    pub id: i64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub request_id: String,
    pub session_id: Option<String>,
    pub org: String,
    pub agent: String,
    pub connector: Option<String>,
    pub tool: Option<String>,
    pub method: String,
    pub status: i64,
    pub rpc_code: Option<i64>,
    pub latency_ms: f64,
    pub policy: Option<String>,
    pub policy_digest: Option<String>,
    pub reason: Option<String>,
}

/// The `WHERE` clause of `filter` with placeholders made by `ph(n)` (1-based), and
/// its values in order. Shared by both sinks; `time` comparisons take the value
/// `since` as the sink stores it.
pub(super) fn where_clause(
    filter: &Filter,
    ph: impl Fn(usize) -> String,
    since: Option<Value>,
) -> (String, Vec<Value>) {
    let mut conds = Vec::new();
    let mut values = Vec::new();
    let mut add = |col: &str, v: Value, values: &mut Vec<Value>| {
        values.push(v);
        let op = if col == "time" { ">=" } else { "=" };
        conds.push(format!("{col} {op} {}", ph(values.len())));
    };
    if let Some(o) = &filter.org {
        add("org", Value::Text(o.clone()), &mut values);
    }
    if let Some(a) = &filter.agent {
        add("agent", Value::Text(a.clone()), &mut values);
    }
    if let Some(c) = &filter.connector {
        add("connector", Value::Text(c.clone()), &mut values);
    }
    if let Some(s) = filter.status {
        add("status", Value::Int(i64::from(s)), &mut values);
    }
    if let Some(t) = since {
        add("time", t, &mut values);
    }
    if conds.is_empty() {
        (String::new(), values)
    } else {
        (format!(" WHERE {}", conds.join(" AND ")), values)
    }
}

/// A filter value.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Text(String),
    Int(i64),
    /// Unix milliseconds, for a timestamp column.
    Time(u64),
}

/// Reads the rows `filter` selects from the sink of `settings`, oldest first.
pub(crate) async fn query(settings: &AuditSettings, filter: &Filter) -> anyhow::Result<Vec<Row>> {
    let mut rows = match &settings.sink {
        SinkSettings::Sqlite { path } => {
            let path = path.clone();
            let filter = filter.clone();
            tokio::task::spawn_blocking(move || super::sqlite::query(&path, &filter)).await??
        }
        SinkSettings::Postgres { url } => super::postgres::query(url, filter).await?,
        SinkSettings::None => {
            anyhow::bail!(
                "[audit] sink = \"none\": there is no table to query (the rows are only in the gateway's log)"
            )
        }
    };
    rows.reverse();
    Ok(rows)
}

/// Output formats of `audit query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Table,
    Json,
}

/// Renders rows as the CLI prints them.
pub(crate) fn render(rows: &[Row], format: Format) -> String {
    match format {
        Format::Json => {
            let mut out = String::from("[\n");
            for (i, r) in rows.iter().enumerate() {
                out.push_str(&serde_json::to_string(r).unwrap_or_default());
                out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
            }
            out.push_str("]\n");
            out
        }
        Format::Table => table(rows),
    }
}

fn table(rows: &[Row]) -> String {
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let header = [
        "TIME",
        "STATUS",
        "RPC",
        "METHOD",
        "ORG",
        "AGENT",
        "CONNECTOR",
        "TOOL",
        "LATENCY_MS",
        "POLICY",
        "REQUEST_ID",
        "REASON",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        cells.push(vec![
            r.time.clone(),
            r.status.to_string(),
            r.rpc_code.map_or("-".into(), |c| c.to_string()),
            r.method.clone(),
            r.org.clone(),
            r.agent.clone(),
            dash(&r.connector),
            dash(&r.tool),
            format!("{:.1}", r.latency_ms),
            dash(&r.policy),
            r.request_id.clone(),
            dash(&r.reason),
        ]);
    }
    let mut widths = vec![0; header.len()];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let last = row.len() - 1;
        for (i, c) in row.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, reason: Option<&str>) -> Row {
        Row {
            id,
            time: "2025-01-01T00:00:00.000Z".into(),
            request_id: format!("r{id}"),
            session_id: None,
            org: "acme".into(),
            agent: "bot".into(),
            connector: Some("conn".into()),
            tool: None,
            method: "tools/call".into(),
            status: 404,
            rpc_code: Some(-32601),
            latency_ms: 1.25,
            policy: None,
            policy_digest: None,
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn json_is_an_array_with_one_row_per_line() {
        let rows = [row(1, None), row(2, Some("no tool"))];
        let text = render(&rows, Format::Json);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), 2);
        assert_eq!(parsed[1]["reason"], "no tool");
        assert_eq!(parsed[0]["rpc_code"], -32601);
        assert_eq!(text.lines().count(), 4);
        assert_eq!(render(&[], Format::Json), "[\n]\n");
    }

    #[test]
    fn table_aligns_columns() {
        let text = render(&[row(1, Some("why"))], Format::Table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("TIME "));
        assert_eq!(lines[0].find("STATUS"), lines[1].find("404"));
        assert!(lines[1].ends_with("why"));
    }

    #[test]
    fn where_clause_numbers_placeholders() {
        let f = Filter {
            org: Some("acme".into()),
            status: Some(404),
            ..Filter::default()
        };
        let (sql, values) = where_clause(&f, |n| format!("${n}"), Some(Value::Int(5)));
        assert_eq!(sql, " WHERE org = $1 AND status = $2 AND time >= $3");
        assert_eq!(values.len(), 3);
        let (sql, values) = where_clause(&Filter::default(), |n| format!("?{n}"), None);
        assert_eq!((sql.as_str(), values.len()), ("", 0));
    }
}
