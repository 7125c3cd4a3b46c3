//! Gateway configs for the tests, built instead of formatted by hand: a [`Config`]
//! holds the `[server]` keys and a list of sections ([`Agent`], [`Connector`],
//! [`Policy`], or raw TOML for anything else) and renders them as the TOML file
//! `portcullis serve --config` reads (the keys are those of `host/src/config/raw.rs`).
//!
//! ```
//! use portcullis_tests::{Agent, Config, Connector, Policy};
//! let (url, hash) = ("http://127.0.0.1:9/mcp", "0".repeat(64));
//! let config = Config::new()
//!     .server("workers = 3")
//!     .connector(Connector::new("conn_test", "Test", url).disabled_tools(&["delete_thing"]))
//!     .agent(Agent::new("alice", &hash))
//!     .policy(Policy::new("builtin:blocklist").timeout_ms(5000))
//!     .raw("[audit]\nsink = \"none\"");
//! assert!(config.render().contains("[[connectors]]\nid = \"conn_test\""));
//! // Gateway::start(&config) writes it and starts the gateway on it.
//! ```

use std::fmt;
use std::path::Path;

/// A TOML basic string literal (quoted and escaped) for `s`.
pub fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A TOML basic string literal for a path.
pub fn toml_path(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

/// A TOML array of strings.
pub fn toml_strs(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", items.join(", "))
}

/// A whole gateway config. `[server]` listens on `127.0.0.1:0` unless a
/// [`Config::server`] line says otherwise; sections render in the order they were
/// added, after `[server]`.
#[derive(Clone, Debug, Default)]
pub struct Config {
    server: Vec<String>,
    sections: Vec<String>,
}

impl Config {
    pub fn new() -> Config {
        Config::default()
    }

    /// More `[server]` lines (`key = value`, one or several separated by newlines).
    pub fn server(mut self, lines: &str) -> Config {
        self.server.push(lines.trim().to_string());
        self
    }

    /// `[admin]` on a free loopback port.
    pub fn admin(self) -> Config {
        self.raw("[admin]\nlisten = \"127.0.0.1:0\"")
    }

    pub fn agent(mut self, agent: Agent) -> Config {
        self.sections.push(agent.render());
        self
    }

    pub fn connector(mut self, connector: Connector) -> Config {
        self.sections.push(connector.render());
        self
    }

    pub fn policy(mut self, policy: Policy) -> Config {
        self.sections.push(policy.render());
        self
    }

    /// An `[[orgs]]` entry with an inline quota table, e.g. `{ calls = 3, per = "day" }`.
    pub fn org(self, id: &str, quota: &str) -> Config {
        self.raw(&format!("[[orgs]]\nid = {}\nquota = {quota}", toml_str(id)))
    }

    /// Any other TOML (`[audit]`, `[quota]`, `[vault]`, `[telemetry]`, a section a
    /// test wants malformed ...), copied as written.
    pub fn raw(mut self, toml: &str) -> Config {
        self.sections.push(toml.trim().to_string());
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut out = String::from("[server]\n");
        if !self
            .server
            .iter()
            .flat_map(|s| s.lines())
            .any(|l| l.trim_start().starts_with("listen"))
        {
            out.push_str("listen = \"127.0.0.1:0\"\n");
        }
        for lines in &self.server {
            if !lines.is_empty() {
                out.push_str(lines);
                out.push('\n');
            }
        }
        for section in &self.sections {
            out.push('\n');
            out.push_str(section);
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// An `[[agents]]` entry: org `acme` and scope `mcp:call` unless set otherwise.
#[derive(Clone, Debug)]
pub struct Agent {
    id: String,
    org: String,
    hash: String,
    scopes: Vec<String>,
    extra: Vec<String>,
}

impl Agent {
    pub fn new(id: &str, key_sha256: &str) -> Agent {
        Agent {
            id: id.to_string(),
            org: "acme".to_string(),
            hash: key_sha256.to_string(),
            scopes: vec!["mcp:call".to_string()],
            extra: Vec::new(),
        }
    }

    pub fn org(mut self, org: &str) -> Agent {
        self.org = org.to_string();
        self
    }

    /// Replaces the scopes (`&[]` for none).
    pub fn scopes(mut self, scopes: &[&str]) -> Agent {
        self.scopes = scopes.iter().map(|s| s.to_string()).collect();
        self
    }

    /// More `key = value` lines (e.g. `mcp_servers = [...]`).
    pub fn extra(mut self, lines: &str) -> Agent {
        if !lines.trim().is_empty() {
            self.extra.push(lines.trim().to_string());
        }
        self
    }

    fn render(&self) -> String {
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        let mut out = format!(
            "[[agents]]\nid = {}\norg = {}\nkey_sha256 = {}\nscopes = {}",
            toml_str(&self.id),
            toml_str(&self.org),
            toml_str(&self.hash),
            toml_strs(&scopes)
        );
        for l in &self.extra {
            out.push('\n');
            out.push_str(l);
        }
        out
    }
}

/// A `[[connectors]]` entry.
#[derive(Clone, Debug)]
pub struct Connector {
    lines: Vec<String>,
}

impl Connector {
    pub fn new(id: &str, name: &str, target_url: &str) -> Connector {
        Connector {
            lines: vec![
                format!("id = {}", toml_str(id)),
                format!("name = {}", toml_str(name)),
                format!("target_url = {}", toml_str(target_url)),
            ],
        }
    }

    /// A stdio connector running `command` with `args`.
    pub fn stdio(id: &str, name: &str, command: &str, args: &[&str]) -> Connector {
        Connector {
            lines: vec![
                format!("id = {}", toml_str(id)),
                format!("name = {}", toml_str(name)),
                "transport = \"stdio\"".to_string(),
                format!("command = {}", toml_str(command)),
                format!("args = {}", toml_strs(args)),
            ],
        }
    }

    /// `credential = "<reference>"` (e.g. `env:TOKEN`).
    pub fn credential(self, reference: &str) -> Connector {
        self.extra(&format!("credential = {}", toml_str(reference)))
    }

    /// `credential = { secret = "<name>", kind = ..., header = ... }`: a vault secret
    /// (`kind` bearer, oauth or header; `header` names the header for `header`).
    pub fn vault_secret(self, secret: &str, kind: Option<&str>, header: Option<&str>) -> Connector {
        let mut fields = vec![format!("secret = {}", toml_str(secret))];
        fields.extend(kind.map(|k| format!("kind = {}", toml_str(k))));
        fields.extend(header.map(|h| format!("header = {}", toml_str(h))));
        self.extra(&format!("credential = {{ {} }}", fields.join(", ")))
    }

    pub fn disabled_tools(self, tools: &[&str]) -> Connector {
        self.extra(&format!("disabled_tools = {}", toml_strs(tools)))
    }

    pub fn timeout_ms(self, ms: u64) -> Connector {
        self.extra(&format!("timeout_ms = {ms}"))
    }

    pub fn relay_requests(self, kinds: &[&str]) -> Connector {
        self.extra(&format!("relay_requests = {}", toml_strs(kinds)))
    }

    /// More `key = value` lines, as written.
    pub fn extra(mut self, lines: &str) -> Connector {
        if !lines.trim().is_empty() {
            self.lines.push(lines.trim().to_string());
        }
        self
    }

    fn render(&self) -> String {
        format!("[[connectors]]\n{}", self.lines.join("\n"))
    }
}

/// A `[[policies]]` entry.
#[derive(Clone, Debug)]
pub struct Policy {
    lines: Vec<String>,
}

impl Policy {
    /// `module` is `builtin:<name>` or a component path (written as a TOML string).
    pub fn new(module: &str) -> Policy {
        Policy {
            lines: vec![format!("module = {}", toml_str(module))],
        }
    }

    /// A policy whose component is the file at `path`.
    pub fn file(path: &Path) -> Policy {
        Policy {
            lines: vec![format!("module = {}", toml_path(path))],
        }
    }

    pub fn name(self, name: &str) -> Policy {
        self.extra(&format!("name = {}", toml_str(name)))
    }

    pub fn timeout_ms(self, ms: u64) -> Policy {
        self.extra(&format!("timeout_ms = {ms}"))
    }

    pub fn cache_decisions(self, on: bool) -> Policy {
        self.extra(&format!("cache_decisions = {on}"))
    }

    pub fn mode(self, mode: &str) -> Policy {
        self.extra(&format!("mode = {}", toml_str(mode)))
    }

    pub fn on_error(self, on_error: &str) -> Policy {
        self.extra(&format!("on_error = {}", toml_str(on_error)))
    }

    pub fn memory_limit_mb(self, mb: u64) -> Policy {
        self.extra(&format!("memory_limit_mb = {mb}"))
    }

    /// `settings = <inline table>`, e.g. `{ read_only = true }`.
    pub fn settings(self, inline_table: &str) -> Policy {
        self.extra(&format!("settings = {inline_table}"))
    }

    /// More `key = value` lines, as written.
    pub fn extra(mut self, lines: &str) -> Policy {
        if !lines.trim().is_empty() {
            self.lines.push(lines.trim().to_string());
        }
        self
    }

    fn render(&self) -> String {
        format!("[[policies]]\n{}", self.lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parseable_toml() {
        let text = Config::new()
            .server("workers = 2")
            .admin()
            .connector(Connector::new("c", "C \"q\"", "http://x/mcp").disabled_tools(&["a*"]))
            .agent(Agent::new("a", "h").scopes(&[]))
            .policy(Policy::new("builtin:blocklist").settings("{ tools = [\"x\"] }"))
            .org("acme", "{ calls = 1, per = \"day\" }")
            .render();
        let v: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(v["server"]["listen"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(v["server"]["workers"].as_integer(), Some(2));
        assert_eq!(v["connectors"][0]["name"].as_str(), Some("C \"q\""));
        assert_eq!(v["agents"][0]["scopes"].as_array().map(Vec::len), Some(0));
        assert_eq!(v["policies"][0]["settings"]["tools"][0].as_str(), Some("x"));
        assert_eq!(v["orgs"][0]["quota"]["calls"].as_integer(), Some(1));
        let vault = Config::new()
            .connector(Connector::new("v", "V", "http://x/mcp").vault_secret(
                "s",
                None,
                Some("X-K"),
            ))
            .render();
        let v: toml::Table = vault.parse().unwrap_or_else(|e| panic!("{e}\n{vault}"));
        assert_eq!(
            v["connectors"][0]["credential"]["secret"].as_str(),
            Some("s")
        );
        assert_eq!(
            v["connectors"][0]["credential"]["header"].as_str(),
            Some("X-K")
        );
        let moved = Config::new().server("listen = \"127.0.0.1:9\"").render();
        assert_eq!(moved.matches("listen").count(), 1, "{moved}");
    }
}
