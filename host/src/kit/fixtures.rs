//! `portcullis policy test MODULE FIXTURES`: offline decision tests for a policy,
//! what `opa test` is to Rego.
//!
//! The fixture file (TOML, or YAML when it ends in `.yaml`/`.yml`) describes the
//! caller, the connector and its tools, and cases with expected verdicts. Each case
//! runs through the gateway's own policy chain code (`policy::Chain`) with the
//! module as the only member, so a fixture decides exactly as the gateway would.
//!
//! ```toml
//! settings = { domains = ["prod.internal"] }  # the policy's settings (default {})
//! timeout_ms = 1000                            # per evaluation (default 1000)
//! memory_limit_mb = 128                        # per evaluation (default 128)
//!
//! [identity]                                   # default: agent "agent", org "org", ["mcp:call"]
//! agent = "reporter"
//! org = "acme"
//! scopes = ["mcp:call"]
//!
//! [connector]                                  # default: conn_test / "Test" / https://example.invalid/mcp
//! id = "conn_db"
//! name = "Database"                            # the slug is derived from it (or set `slug`)
//! target_url = "https://db.example/mcp"
//! disabled_tools = []
//! tools = ["query", { name = "drop", annotations = { destructiveHint = true } }]
//!
//! # declaration = [{ url = "*", tools = { required = ["query"] } }]   # the agent's mcp_servers
//!
//! [[calls]]                                    # check-call
//! name = "a plain query"                       # optional
//! tool = "query"
//! arguments = { sql = "select 1" }             # or arguments_json = "<raw text>"
//! expect = "allow"                             # allow | deny
//!
//! [[calls]]
//! tool = "query"
//! arguments = { dsn = "postgres://db1.prod.internal/x" }
//! expect = "deny"
//! code = -32001                                # optional checks on the denial
//! message = "Denied: production host"
//! reason = "db1.prod.internal"                 # a substring of the audit reason
//!
//! [[lists]]                                    # filter-tools
//! visible = ["query"]                          # exactly the tools left visible
//!
//! [[results]]                                  # check-result (post-call hook)
//! tool = "query"
//! result = { content = [{ type = "text", text = "mail bob@example.com" }] }
//! expect = "replace"                           # pass | replace | deny
//! contains = ["[redacted email]"]              # substrings of the replacement
//! not_contains = ["bob@example.com"]
//!
//! [[validate]]                                 # validate-settings
//! settings = { domains = [] }
//! expect = "error"                             # ok | error
//! error = "must not be empty"                  # a substring of the message
//! ```
//!
//! Resources and prompts (0.2 policies) are listed on the connector and judged
//! by their own cases, with the same `expect`, `code`, `message`, `reason`,
//! `contains`, `not_contains` and `replaced` checks as above:
//!
//! ```toml
//! [connector]
//! disabled_prompts = ["internal-*"]
//! disabled_resources = ["file:///secret/*"]
//! resources = ["file:///a.txt", { uri = "file:///b.md", name = "b", mimeType = "text/markdown" }]
//! templates = ["file:///logs/{day}"]
//! prompts = ["summarise", { name = "review", arguments = [{ name = "code", required = true }] }]
//!
//! [[resource_lists]]                           # filter-resources
//! kind = "resources"                           # resources (default) | templates
//! visible = ["file:///a.txt"]                  # URIs (templates: URI templates) left visible
//!
//! [[prompt_lists]]                             # filter-prompts
//! visible = ["summarise"]
//!
//! [[resources]]                                # check-resource
//! uri = "file:///secret/key"                   # a listed URI or template, or any URI
//! action = "read"                              # read (default) | subscribe | complete
//! # argument = "day", value = "2026-"          # for complete
//! expect = "deny"
//! code = -32002
//!
//! [[prompts]]                                  # check-prompt
//! prompt = "review"
//! arguments = { code = "fn main() {}" }        # for get (default {})
//! action = "get"                               # get (default) | complete
//! expect = "allow"
//!
//! [[contents]]                                 # check-resource-contents
//! uri = "file:///a.txt"
//! result = { contents = [{ uri = "file:///a.txt", text = "key AKIA..." }] }
//! expect = "replace"
//!
//! [[prompt_results]]                           # check-prompt-result
//! prompt = "summarise"
//! result = { messages = [] }
//! expect = "pass"
//! ```
//!
//! Any case may override `identity` and `settings`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::config::{Connector, ModuleRef, OnError, PolicyMode, PolicySpec, ServerRule, slugify};
use crate::policy::{
    Chain, CompletionRequest, Decision, ListKind, PromptRequest, ResourceRequest, Runtime, Subject,
    build_chain,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fixtures {
    #[serde(default)]
    pub settings: Option<Value>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub memory_limit_mb: Option<u64>,
    #[serde(default)]
    pub identity: IdentityFx,
    #[serde(default)]
    pub connector: ConnectorFx,
    #[serde(default)]
    pub declaration: Option<Vec<ServerRule>>,
    #[serde(default)]
    pub calls: Vec<CallCase>,
    #[serde(default)]
    pub lists: Vec<ListCase>,
    #[serde(default)]
    pub results: Vec<ResultCase>,
    #[serde(default)]
    pub validate: Vec<ValidateCase>,
    #[serde(default)]
    pub resource_lists: Vec<ResourceListCase>,
    #[serde(default)]
    pub prompt_lists: Vec<ListCase>,
    #[serde(default)]
    pub resources: Vec<ResourceCase>,
    #[serde(default)]
    pub prompts: Vec<PromptCase>,
    #[serde(default)]
    pub contents: Vec<ResultCase>,
    #[serde(default)]
    pub prompt_results: Vec<ResultCase>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentityFx {
    #[serde(default = "default_agent")]
    pub agent: String,
    #[serde(default = "default_org")]
    pub org: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

impl Default for IdentityFx {
    fn default() -> Self {
        IdentityFx {
            agent: default_agent(),
            org: default_org(),
            scopes: default_scopes(),
        }
    }
}

fn default_agent() -> String {
    "agent".into()
}
fn default_org() -> String {
    "org".into()
}
fn default_scopes() -> Vec<String> {
    vec!["mcp:call".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnectorFx {
    #[serde(default = "default_conn_id")]
    pub id: String,
    #[serde(default = "default_conn_name")]
    pub name: String,
    pub slug: Option<String>,
    #[serde(default = "default_conn_url")]
    pub target_url: String,
    #[serde(default)]
    pub disabled_tools: Vec<String>,
    #[serde(default)]
    pub disabled_prompts: Vec<String>,
    #[serde(default)]
    pub disabled_resources: Vec<String>,
    /// Tool names, or MCP tool objects (`{ name, annotations = { readOnlyHint, ... } }`).
    #[serde(default)]
    pub tools: Vec<Value>,
    /// Resource URIs, or MCP Resource objects.
    #[serde(default)]
    pub resources: Vec<Value>,
    /// URI templates, or MCP ResourceTemplate objects.
    #[serde(default)]
    pub templates: Vec<Value>,
    /// Prompt names, or MCP Prompt objects.
    #[serde(default)]
    pub prompts: Vec<Value>,
}

impl Default for ConnectorFx {
    fn default() -> Self {
        ConnectorFx {
            id: default_conn_id(),
            name: default_conn_name(),
            slug: None,
            target_url: default_conn_url(),
            disabled_tools: Vec::new(),
            disabled_prompts: Vec::new(),
            disabled_resources: Vec::new(),
            tools: Vec::new(),
            resources: Vec::new(),
            templates: Vec::new(),
            prompts: Vec::new(),
        }
    }
}

fn default_conn_id() -> String {
    "conn_test".into()
}
fn default_conn_name() -> String {
    "Test".into()
}
fn default_conn_url() -> String {
    "https://example.invalid/mcp".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CallExpect {
    Allow,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallCase {
    pub name: Option<String>,
    pub tool: String,
    pub arguments: Option<Value>,
    pub arguments_json: Option<String>,
    pub identity: Option<IdentityFx>,
    pub settings: Option<Value>,
    pub expect: CallExpect,
    pub code: Option<i64>,
    pub message: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListCase {
    pub name: Option<String>,
    pub identity: Option<IdentityFx>,
    pub settings: Option<Value>,
    pub visible: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ResourceListKind {
    #[default]
    Resources,
    Templates,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourceListCase {
    pub name: Option<String>,
    #[serde(default)]
    pub kind: ResourceListKind,
    pub identity: Option<IdentityFx>,
    pub settings: Option<Value>,
    pub visible: Vec<String>,
}

/// What a resource or prompt case asks: `read`/`subscribe` (resources), `get`
/// (prompts), or `complete` (both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    Read,
    Subscribe,
    Get,
    Complete,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourceCase {
    pub name: Option<String>,
    pub uri: String,
    pub action: Option<Action>,
    /// For `complete`: the argument and what was typed.
    pub argument: Option<String>,
    pub value: Option<String>,
    pub identity: Option<IdentityFx>,
    pub settings: Option<Value>,
    pub expect: CallExpect,
    pub code: Option<i64>,
    pub message: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PromptCase {
    pub name: Option<String>,
    pub prompt: String,
    pub arguments: Option<Value>,
    pub action: Option<Action>,
    pub argument: Option<String>,
    pub value: Option<String>,
    pub identity: Option<IdentityFx>,
    pub settings: Option<Value>,
    pub expect: CallExpect,
    pub code: Option<i64>,
    pub message: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ResultExpect {
    Pass,
    Replace,
    Deny,
}

/// A result hook case: `tool` for `[[results]]`, `uri` for `[[contents]]`,
/// `prompt` for `[[prompt_results]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResultCase {
    pub name: Option<String>,
    #[serde(default)]
    pub tool: String,
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub prompt: String,
    pub result: Option<Value>,
    pub result_json: Option<String>,
    pub identity: Option<IdentityFx>,
    pub settings: Option<Value>,
    pub expect: ResultExpect,
    pub code: Option<i64>,
    pub message: Option<String>,
    pub reason: Option<String>,
    #[serde(default)]
    pub contains: Vec<String>,
    #[serde(default)]
    pub not_contains: Vec<String>,
    /// The exact replacement (compared as JSON).
    pub replaced: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ValidateExpect {
    Ok,
    Error,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidateCase {
    pub name: Option<String>,
    pub settings: Value,
    pub expect: ValidateExpect,
    pub error: Option<String>,
}

impl Fixtures {
    /// Reads a fixture file (YAML for `.yaml`/`.yml`, TOML otherwise).
    pub(crate) fn load(path: &Path) -> anyhow::Result<Fixtures> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let fx: Fixtures = if yaml {
            serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        } else {
            toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim()))?
        };
        let cases = fx.calls.len()
            + fx.lists.len()
            + fx.results.len()
            + fx.validate.len()
            + fx.resource_lists.len()
            + fx.prompt_lists.len()
            + fx.resources.len()
            + fx.prompts.len()
            + fx.contents.len()
            + fx.prompt_results.len();
        if cases == 0 {
            anyhow::bail!(
                "{}: no cases ([[calls]], [[lists]], [[results]], [[validate]], [[resource_lists]], [[prompt_lists]], [[resources]], [[prompts]], [[contents]] or [[prompt_results]])",
                path.display()
            );
        }
        fx.check_result_cases(path)?;
        Ok(fx)
    }

    /// Each result case names what its table is about.
    fn check_result_cases(&self, path: &Path) -> anyhow::Result<()> {
        let tables = [
            ("results", "tool", &self.results),
            ("contents", "uri", &self.contents),
            ("prompt_results", "prompt", &self.prompt_results),
        ];
        for (table, key, cases) in tables {
            let named = |c: &ResultCase| match key {
                "tool" => !c.tool.is_empty(),
                "uri" => !c.uri.is_empty(),
                _ => !c.prompt.is_empty(),
            };
            if let Some(j) = cases.iter().position(|c| !named(c)) {
                anyhow::bail!(
                    "{}: [[{table}]] case {} needs `{key}`",
                    path.display(),
                    j + 1
                );
            }
        }
        Ok(())
    }
}

/// One case's outcome.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub kind: &'static str,
    pub name: String,
    pub expected: String,
    pub got: String,
    pub pass: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
}

/// Settings as the JSON text a policy receives.
fn settings_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "{}".into(),
        Some(v) => v.to_string(),
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

struct Runner<'a> {
    runtime: Arc<Runtime>,
    module: &'a Path,
    name: String,
    fx: &'a Fixtures,
    connector: Connector,
    tools: Vec<Value>,
    resources: Vec<Value>,
    templates: Vec<Value>,
    prompts: Vec<Value>,
    chains: HashMap<String, Result<Arc<Chain>, String>>,
}

impl Runner<'_> {
    fn spec(&self, settings: String) -> PolicySpec {
        PolicySpec {
            name: self.name.clone(),
            module: ModuleRef::File(self.module.to_path_buf()),
            settings,
            mode: PolicyMode::Enforce,
            on_error: OnError::Deny,
            timeout: Duration::from_millis(self.fx.timeout_ms.unwrap_or(1000)),
            memory_limit_bytes: (self.fx.memory_limit_mb.unwrap_or(128) as usize) << 20,
            cache_decisions: false,
        }
    }

    /// The one-policy chain for these settings (validated; cached per settings).
    fn chain(&mut self, settings: Option<&Value>) -> Result<Arc<Chain>, String> {
        let text = settings_text(settings.or(self.fx.settings.as_ref()));
        if let Some(c) = self.chains.get(&text) {
            return c.clone();
        }
        let spec = self.spec(text.clone());
        let built = build_chain(&self.runtime, &[spec])
            .map(Arc::new)
            .map_err(|e| format!("{e:#}"));
        self.chains.insert(text, built.clone());
        built
    }

    fn identity(&self, over: Option<&IdentityFx>) -> Identity {
        let i = over.unwrap_or(&self.fx.identity);
        Identity::new(&i.agent, &i.org, i.scopes.clone(), None)
    }

    fn subject<'s>(&'s self, identity: &'s Identity) -> Subject<'s> {
        Subject {
            identity,
            declaration: self.fx.declaration.as_deref(),
            connector: &self.connector,
            tools: &self.tools,
            tools_version: 0,
        }
    }

    fn tool(&self, name: &str) -> Value {
        find(&self.tools, "name", name).unwrap_or_else(|| json!({ "name": name }))
    }

    /// A listed resource, else a listed template, else a stand-in named by the URI.
    fn resource(&self, uri: &str) -> Value {
        find(&self.resources, "uri", uri)
            .or_else(|| find(&self.templates, "uriTemplate", uri))
            .unwrap_or_else(|| json!({ "uri": uri, "name": uri }))
    }

    fn prompt(&self, name: &str) -> Value {
        find(&self.prompts, "name", name).unwrap_or_else(|| json!({ "name": name }))
    }

    fn call(&mut self, c: &CallCase) -> Row {
        let args_text = json_text(c.arguments.as_ref(), c.arguments_json.as_deref());
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| format!("{} {}", c.tool, short(&args_text, 40)));
        let check = Check {
            expect: c.expect,
            code: c.code,
            message: c.message.as_deref(),
            reason: c.reason.as_deref(),
        };
        let tool = self.tool(&c.tool);
        self.check(
            "call",
            name,
            check,
            c.identity.as_ref(),
            c.settings.as_ref(),
            |chain, subject| chain.check_call(subject, &tool, &args_text),
        )
    }

    fn resource_case(&mut self, c: &ResourceCase) -> Row {
        let action = c.action.unwrap_or(Action::Read);
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| format!("{} {}", action.name(), c.uri));
        let check = Check {
            expect: c.expect,
            code: c.code,
            message: c.message.as_deref(),
            reason: c.reason.as_deref(),
        };
        let request = match action {
            Action::Read => ResourceRequest::Read,
            Action::Subscribe => ResourceRequest::Subscribe,
            Action::Complete => ResourceRequest::Complete(completion(&c.argument, &c.value)),
            Action::Get => return bad_action("resource", name, "get is for prompts"),
        };
        let item = self.resource(&c.uri);
        self.check(
            "resource",
            name,
            check,
            c.identity.as_ref(),
            c.settings.as_ref(),
            |chain, subject| chain.check_resource(subject, &item, request),
        )
    }

    fn prompt_case(&mut self, c: &PromptCase) -> Row {
        let action = c.action.unwrap_or(Action::Get);
        let arguments = json_text(c.arguments.as_ref(), None);
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| format!("{} {}", action.name(), c.prompt));
        let check = Check {
            expect: c.expect,
            code: c.code,
            message: c.message.as_deref(),
            reason: c.reason.as_deref(),
        };
        let request = match action {
            Action::Get => PromptRequest::Get(&arguments),
            Action::Complete => PromptRequest::Complete(completion(&c.argument, &c.value)),
            Action::Read | Action::Subscribe => {
                return bad_action("prompt", name, "read and subscribe are for resources");
            }
        };
        let item = self.prompt(&c.prompt);
        self.check(
            "prompt",
            name,
            check,
            c.identity.as_ref(),
            c.settings.as_ref(),
            |chain, subject| chain.check_prompt(subject, &item, request),
        )
    }

    /// Runs one request check and compares its decision with the case's.
    fn check(
        &mut self,
        kind: &'static str,
        name: String,
        want: Check,
        identity: Option<&IdentityFx>,
        settings: Option<&Value>,
        decide: impl FnOnce(&Chain, &Subject) -> Decision,
    ) -> Row {
        let expected = want.expected();
        let chain = match self.chain(settings) {
            Ok(chain) => chain,
            Err(e) => return failed(kind, name, expected, "settings refused", e),
        };
        let identity = self.identity(identity);
        let decision = decide(&chain, &self.subject(&identity));
        let got = match &decision.denial {
            None => "allow".to_string(),
            Some(d) => format!("deny {} {:?}", d.code, d.message),
        };
        row(kind, name, expected, got, want.problems(&decision))
    }

    fn list(&mut self, l: &ListCase) -> Row {
        let tools = self.tools.clone();
        self.visible(
            "list",
            "tools/list",
            l.name.as_ref(),
            l,
            &tools,
            "name",
            |c, s, _| c.filter_tools(s),
        )
    }

    fn prompt_list(&mut self, l: &ListCase) -> Row {
        let prompts = self.prompts.clone();
        self.visible(
            "prompts",
            "prompts/list",
            l.name.as_ref(),
            l,
            &prompts,
            "name",
            |c, s, items| c.filter_items(s, ListKind::Prompts, items, 0),
        )
    }

    fn resource_list(&mut self, r: &ResourceListCase) -> Row {
        let l = ListCase {
            name: r.name.clone(),
            identity: r.identity.clone(),
            settings: r.settings.clone(),
            visible: r.visible.clone(),
        };
        let (items, key, kind, default) = match r.kind {
            ResourceListKind::Resources => (
                self.resources.clone(),
                "uri",
                ListKind::Resources,
                "resources/list",
            ),
            ResourceListKind::Templates => (
                self.templates.clone(),
                "uriTemplate",
                ListKind::Templates,
                "resources/templates/list",
            ),
        };
        self.visible(
            "resources",
            default,
            r.name.as_ref(),
            &l,
            &items,
            key,
            |c, s, items| c.filter_items(s, kind, items, 0),
        )
    }

    /// Runs one list filter and compares what stays visible (by `key`) with the case.
    #[allow(clippy::too_many_arguments)]
    fn visible(
        &mut self,
        kind: &'static str,
        default_name: &str,
        name: Option<&String>,
        l: &ListCase,
        items: &[Value],
        key: &str,
        filter: impl FnOnce(&Chain, &Subject, &[Value]) -> Vec<bool>,
    ) -> Row {
        let name = name.cloned().unwrap_or_else(|| default_name.into());
        let expected = format!("visible [{}]", l.visible.join(", "));
        let chain = match self.chain(l.settings.as_ref()) {
            Ok(chain) => chain,
            Err(e) => return failed(kind, name, expected, "settings refused", e),
        };
        let identity = self.identity(l.identity.as_ref());
        let visible: Vec<String> = filter(&chain, &self.subject(&identity), items)
            .into_iter()
            .zip(items)
            .filter(|(v, _)| *v)
            .map(|(_, t)| t[key].as_str().unwrap_or_default().to_string())
            .collect();
        let got = format!("visible [{}]", visible.join(", "));
        let mut want = l.visible.clone();
        want.sort();
        let mut have = visible.clone();
        have.sort();
        let problems = if want == have {
            Vec::new()
        } else {
            vec!["different items visible".to_string()]
        };
        row(kind, name, expected, got, problems)
    }

    fn result(&mut self, r: &ResultCase) -> Row {
        let tool = self.tool(&r.tool);
        self.result_with("result", &r.tool, r, |c, s, text| {
            c.check_result(s, &tool, text)
        })
    }

    fn contents(&mut self, r: &ResultCase) -> Row {
        let item = self.resource(&r.uri);
        self.result_with("contents", &r.uri, r, |c, s, text| {
            c.check_resource_contents(s, &item, text)
        })
    }

    fn prompt_result(&mut self, r: &ResultCase) -> Row {
        let item = self.prompt(&r.prompt);
        self.result_with("prompt-result", &r.prompt, r, |c, s, text| {
            c.check_prompt_result(s, &item, text)
        })
    }

    /// Runs one result hook and compares its decision with the case's.
    fn result_with(
        &mut self,
        kind: &'static str,
        item: &str,
        r: &ResultCase,
        hook: impl FnOnce(&Chain, &Subject, &str) -> Decision,
    ) -> Row {
        let text = match (&r.result, &r.result_json) {
            (_, Some(raw)) => raw.clone(),
            (Some(v), None) => v.to_string(),
            (None, None) => json!({"content": []}).to_string(),
        };
        let name = r
            .name
            .clone()
            .unwrap_or_else(|| format!("{item} {}", short(&text, 40)));
        let expected = match r.expect {
            ResultExpect::Pass => "pass".to_string(),
            ResultExpect::Replace => "replace".to_string(),
            ResultExpect::Deny => match r.code {
                Some(code) => format!("deny {code}"),
                None => "deny".to_string(),
            },
        };
        let chain = match self.chain(r.settings.as_ref()) {
            Ok(chain) => chain,
            Err(e) => return failed(kind, name, expected, "settings refused", e),
        };
        let identity = self.identity(r.identity.as_ref());
        let d = hook(&chain, &self.subject(&identity), &text);
        let mut problems = Vec::new();
        let got = match (&d.denial, &d.replacement) {
            (Some(den), _) => format!("deny {} {:?}", den.code, den.message),
            (None, Some(new)) => format!("replace {}", short(new, 60)),
            (None, None) => "pass".to_string(),
        };
        match (r.expect, &d.denial, &d.replacement) {
            (ResultExpect::Deny, Some(den), _) => {
                if r.code.is_some_and(|c| c != den.code) {
                    problems.push(format!("code {}", den.code));
                }
                if r.message.as_ref().is_some_and(|m| m != &den.message) {
                    problems.push(format!("message {:?}", den.message));
                }
                if let Some(want) = &r.reason
                    && !den.reason.contains(want.as_str())
                {
                    problems.push(format!("reason {:?} lacks {want:?}", den.reason));
                }
            }
            (ResultExpect::Replace, None, Some(new)) => {
                for s in &r.contains {
                    if !new.contains(s.as_str()) {
                        problems.push(format!("replacement lacks {s:?}"));
                    }
                }
                for s in &r.not_contains {
                    if new.contains(s.as_str()) {
                        problems.push(format!("replacement still has {s:?}"));
                    }
                }
                if let Some(want) = &r.replaced {
                    let have: Value = serde_json::from_str(new).unwrap_or(Value::Null);
                    if &have != want {
                        problems.push(format!("replacement is {have}"));
                    }
                }
            }
            (ResultExpect::Pass, None, None) => {}
            (_, Some(den), _) => problems.push(format!("denied: {}", den.reason)),
            (_, None, Some(_)) => problems.push("replaced".into()),
            (_, None, None) => problems.push("passed unchanged".into()),
        }
        row(kind, name, expected, got, problems)
    }

    fn validate(&mut self, v: &ValidateCase) -> Row {
        let text = settings_text(Some(&v.settings));
        let name = v
            .name
            .clone()
            .unwrap_or_else(|| format!("settings {}", short(&text, 40)));
        let expected = match v.expect {
            ValidateExpect::Ok => "ok".to_string(),
            ValidateExpect::Error => "error".to_string(),
        };
        let outcome = self.chain(Some(&v.settings));
        let (got, problems) = match (&outcome, v.expect) {
            (Ok(_), ValidateExpect::Ok) => ("ok".to_string(), vec![]),
            (Ok(_), ValidateExpect::Error) => ("ok".to_string(), vec!["accepted".to_string()]),
            (Err(e), ValidateExpect::Ok) => ("error".to_string(), vec![e.clone()]),
            (Err(e), ValidateExpect::Error) => {
                let mut p = Vec::new();
                if let Some(want) = &v.error
                    && !e.contains(want.as_str())
                {
                    p.push(format!("error {e:?} lacks {want:?}"));
                }
                ("error".to_string(), p)
            }
        };
        row("settings", name, expected, got, problems)
    }
}

/// What a request-check case expects.
struct Check<'a> {
    expect: CallExpect,
    code: Option<i64>,
    message: Option<&'a str>,
    reason: Option<&'a str>,
}

impl Check<'_> {
    fn expected(&self) -> String {
        match self.expect {
            CallExpect::Allow => "allow".to_string(),
            CallExpect::Deny => {
                let mut s = "deny".to_string();
                if let Some(code) = self.code {
                    s.push_str(&format!(" {code}"));
                }
                if let Some(m) = self.message {
                    s.push_str(&format!(" {m:?}"));
                }
                s
            }
        }
    }

    /// How `decision` differs from what is expected (empty: it passes).
    fn problems(&self, decision: &Decision) -> Vec<String> {
        let mut problems = Vec::new();
        match (self.expect, &decision.denial) {
            (CallExpect::Allow, Some(d)) => problems.push(format!("denied: {}", d.reason)),
            (CallExpect::Deny, None) => problems.push("allowed".into()),
            (CallExpect::Deny, Some(d)) => {
                if self.code.is_some_and(|code| code != d.code) {
                    problems.push(format!(
                        "code {} != {}",
                        d.code,
                        self.code.unwrap_or_default()
                    ));
                }
                if self.message.is_some_and(|m| m != d.message) {
                    problems.push(format!("message {:?}", d.message));
                }
                if let Some(r) = self.reason
                    && !d.reason.contains(r)
                {
                    problems.push(format!("reason {:?} lacks {r:?}", d.reason));
                }
            }
            (CallExpect::Allow, None) => {}
        }
        problems
    }
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Subscribe => "subscribe",
            Action::Get => "get",
            Action::Complete => "complete",
        }
    }
}

fn completion<'a>(
    argument: &'a Option<String>,
    value: &'a Option<String>,
) -> CompletionRequest<'a> {
    CompletionRequest {
        argument: argument.as_deref().unwrap_or_default(),
        value: value.as_deref().unwrap_or_default(),
        context: "{}",
    }
}

fn bad_action(kind: &'static str, name: String, why: &str) -> Row {
    failed(
        kind,
        name,
        String::new(),
        "bad case",
        format!("action: {why}"),
    )
}

/// JSON text of a case's object (`raw` wins), `{}` when it has none.
fn json_text(value: Option<&Value>, raw: Option<&str>) -> String {
    match (value, raw) {
        (_, Some(raw)) => raw.to_string(),
        (Some(v), None) => v.to_string(),
        (None, None) => "{}".into(),
    }
}

/// The item of `items` whose `key` is `value`.
fn find(items: &[Value], key: &str, value: &str) -> Option<Value> {
    items
        .iter()
        .find(|t| t.get(key).and_then(Value::as_str) == Some(value))
        .cloned()
}

/// A fixture list: bare strings become `{ key: string }` (plus `name` for
/// resources and templates, which MCP requires), objects stay as written.
fn items(list: &[Value], key: &str) -> Vec<Value> {
    list.iter()
        .map(|t| match t {
            Value::String(s) if key == "name" => json!({ "name": s }),
            Value::String(s) => json!({ key: s, "name": s }),
            other => other.clone(),
        })
        .collect()
}

fn row(
    kind: &'static str,
    name: String,
    expected: String,
    got: String,
    problems: Vec<String>,
) -> Row {
    Row {
        kind,
        name,
        expected,
        got,
        pass: problems.is_empty(),
        detail: problems.join("; "),
    }
}

fn failed(kind: &'static str, name: String, expected: String, got: &str, detail: String) -> Row {
    Row {
        kind,
        name,
        expected,
        got: got.to_string(),
        pass: false,
        detail,
    }
}

/// How long the module took to load and to evaluate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Compile + link + `validate-settings` of the first chain.
    pub load: Duration,
    /// Mean wall time of one `check-call` (fresh instance included), over `samples`.
    pub per_call: Option<Duration>,
    pub samples: usize,
}

/// [`run`], then `repeat` more rounds of every `[[calls]]` case to time them.
pub(crate) fn run_timed(
    module: &Path,
    fixtures: &Fixtures,
    repeat: usize,
) -> anyhow::Result<(Vec<Row>, Timing)> {
    let bytes = std::fs::read(module)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", module.display()))?;
    let name = super::metadata::read(&bytes)
        .ok()
        .flatten()
        .and_then(|m| m.name)
        .or_else(|| module.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "policy".into());
    let c = &fixtures.connector;
    let connector = Connector {
        id: c.id.clone(),
        slug: c.slug.clone().unwrap_or_else(|| slugify(&c.name)),
        target_url: c.target_url.clone(),
        transport: Default::default(),
        credential: None,
        disabled_tools: c.disabled_tools.clone(),
        disabled_prompts: c.disabled_prompts.clone(),
        disabled_resources: c.disabled_resources.clone(),
        timeout: Duration::from_secs(30),
        relay: Default::default(),
        pinning: Default::default(),
        max_result_bytes: 16 << 20,
    };
    let mut runner = Runner {
        runtime: Runtime::new()?,
        module,
        name,
        fx: fixtures,
        connector,
        tools: items(&c.tools, "name"),
        resources: items(&c.resources, "uri"),
        templates: items(&c.templates, "uriTemplate"),
        prompts: items(&c.prompts, "name"),
        chains: HashMap::new(),
    };
    let started = std::time::Instant::now();
    let _ = runner.chain(None);
    let load = started.elapsed();
    let mut rows = Vec::new();
    for v in &fixtures.validate {
        rows.push(runner.validate(v));
    }
    for l in &fixtures.lists {
        rows.push(runner.list(l));
    }
    for c in &fixtures.calls {
        rows.push(runner.call(c));
    }
    for r in &fixtures.results {
        rows.push(runner.result(r));
    }
    for l in &fixtures.resource_lists {
        rows.push(runner.resource_list(l));
    }
    for l in &fixtures.prompt_lists {
        rows.push(runner.prompt_list(l));
    }
    for c in &fixtures.resources {
        rows.push(runner.resource_case(c));
    }
    for c in &fixtures.prompts {
        rows.push(runner.prompt_case(c));
    }
    for r in &fixtures.contents {
        rows.push(runner.contents(r));
    }
    for r in &fixtures.prompt_results {
        rows.push(runner.prompt_result(r));
    }
    let mut timing = Timing {
        load,
        per_call: None,
        samples: 0,
    };
    if repeat > 0 && !fixtures.calls.is_empty() {
        let started = std::time::Instant::now();
        for _ in 0..repeat {
            for c in &fixtures.calls {
                let _ = runner.call(c);
            }
        }
        timing.samples = repeat * fixtures.calls.len();
        timing.per_call = Some(started.elapsed() / timing.samples as u32);
    }
    Ok((rows, timing))
}

/// The pass/fail table, ending with the `N passed, N failed` line.
pub(crate) fn render(rows: &[Row]) -> String {
    let w_name = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 48);
    let w_exp = rows
        .iter()
        .map(|r| r.expected.chars().count())
        .max()
        .unwrap_or(8)
        .clamp(8, 40);
    let w_got = rows
        .iter()
        .map(|r| r.got.chars().count())
        .max()
        .unwrap_or(3)
        .clamp(3, 40);
    let mut out = format!(
        "{:>3}  {:<8}  {:<w_name$}  {:<w_exp$}  {:<w_got$}  RESULT\n",
        "#", "KIND", "CASE", "EXPECTED", "GOT"
    );
    for (i, r) in rows.iter().enumerate() {
        out.push_str(&format!(
            "{:>3}  {:<8}  {:<w_name$}  {:<w_exp$}  {:<w_got$}  {}\n",
            i + 1,
            r.kind,
            short(&r.name, w_name),
            short(&r.expected, w_exp),
            short(&r.got, w_got),
            if r.pass { "PASS" } else { "FAIL" }
        ));
    }
    let failures: Vec<(usize, &Row)> = rows.iter().enumerate().filter(|(_, r)| !r.pass).collect();
    if !failures.is_empty() {
        out.push_str("\nfailures:\n");
        for (i, r) in &failures {
            out.push_str(&format!(
                "  #{} {} {}: {}\n",
                i + 1,
                r.kind,
                r.name,
                r.detail
            ));
        }
    }
    let passed = rows.len() - failures.len();
    out.push_str(&format!("\n{passed} passed, {} failed\n", failures.len()));
    out
}
