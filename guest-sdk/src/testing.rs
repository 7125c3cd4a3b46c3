//! Builders for SDK values and the seed document's hint table, for policy unit tests.
//!
//! Nothing here is needed at run time; it keeps native tests of policies short.
//! Tools, connectors and contexts; resources, templates and prompts with their
//! actions; `mcpServers` rules; the hint table.

use crate::{
    Annotations, Completion, Connector, Context, Hint, HintFilter, Identity, Prompt, PromptAction,
    PromptArgument, Resource, ResourceAnnotations, ResourceKind, ServerRule, Tool, ToolConstraints,
};

/// Annotations with the four hints as given (`None` = not annotated).
pub fn annotations(
    read_only: Option<bool>,
    destructive: Option<bool>,
    idempotent: Option<bool>,
    open_world: Option<bool>,
) -> Annotations {
    Annotations {
        read_only,
        destructive,
        idempotent,
        open_world,
    }
}

/// Annotations where the upstream annotated nothing.
pub fn unannotated() -> Annotations {
    annotations(None, None, None, None)
}

/// An unannotated tool.
pub fn tool(name: &str) -> Tool {
    tool_with(name, unannotated())
}

/// A tool with the given annotations.
pub fn tool_with(name: &str, annotations: Annotations) -> Tool {
    Tool {
        name: name.to_string(),
        annotations,
        definition: None,
    }
}

/// `tool` with its definition (the Tool object's JSON text), as the gateway passes
/// it to a policy that declares `reads_tool_definitions`.
pub fn with_definition(tool: Tool, definition: &str) -> Tool {
    Tool {
        definition: Some(definition.to_string()),
        ..tool
    }
}

/// Unannotated tools with these names.
pub fn tools(names: &[&str]) -> Vec<Tool> {
    names.iter().map(|n| tool(n)).collect()
}

/// A Streamable HTTP connector with empty blocklists; the slug is the id without
/// `conn_`.
pub fn connector(id: &str, target_url: &str, tools: Vec<Tool>) -> Connector {
    connector_via(id, target_url, "streamable-http", tools)
}

/// A connector reached over `transport` (`streamable-http`, `sse`, `stdio`) with
/// empty blocklists; the slug is the id without `conn_`.
pub fn connector_via(id: &str, target_url: &str, transport: &str, tools: Vec<Tool>) -> Connector {
    Connector {
        id: id.to_string(),
        slug: id.trim_start_matches("conn_").to_string(),
        target_url: target_url.to_string(),
        transport: transport.to_string(),
        disabled_tools: Vec::new(),
        disabled_prompts: Vec::new(),
        disabled_resources: Vec::new(),
        tools,
    }
}

/// A connector to a program the gateway runs: target URL `stdio://<id>`,
/// transport `stdio`.
pub fn stdio_connector(id: &str, tools: Vec<Tool>) -> Connector {
    connector_via(id, &format!("stdio://{id}"), "stdio", tools)
}

/// `connector` with these operator blocklists (tool names, prompt names,
/// resource URIs or names; exact or `*` patterns).
pub fn with_blocklists(
    connector: Connector,
    tools: &[&str],
    prompts: &[&str],
    resources: &[&str],
) -> Connector {
    Connector {
        disabled_tools: strings(tools),
        disabled_prompts: strings(prompts),
        disabled_resources: strings(resources),
        ..connector
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A concrete resource (from `resources/list`) with only a URI and a name.
pub fn resource(uri: &str, name: &str) -> Resource {
    Resource {
        kind: ResourceKind::Resource,
        uri: uri.to_string(),
        name: name.to_string(),
        title: None,
        description: None,
        mime_type: None,
        annotations: None,
    }
}

/// A resource template (from `resources/templates/list`) with only a URI template
/// and a name.
pub fn template(uri_template: &str, name: &str) -> Resource {
    Resource {
        kind: ResourceKind::Template,
        ..resource(uri_template, name)
    }
}

/// Resource annotations as given.
pub fn resource_annotations(
    audience: &[&str],
    priority: Option<f64>,
    last_modified: Option<&str>,
) -> ResourceAnnotations {
    ResourceAnnotations {
        audience: strings(audience),
        priority,
        last_modified: last_modified.map(str::to_string),
    }
}

/// A prompt that takes no arguments.
pub fn prompt(name: &str) -> Prompt {
    prompt_with(name, Vec::new())
}

/// A prompt with these arguments.
pub fn prompt_with(name: &str, arguments: Vec<PromptArgument>) -> Prompt {
    Prompt {
        name: name.to_string(),
        title: None,
        description: None,
        arguments,
    }
}

/// Prompts with these names, taking no arguments.
pub fn prompts(names: &[&str]) -> Vec<Prompt> {
    names.iter().map(|n| prompt(n)).collect()
}

/// A prompt argument without a description.
pub fn prompt_argument(name: &str, required: bool) -> PromptArgument {
    PromptArgument {
        name: name.to_string(),
        description: None,
        required,
    }
}

/// `prompts/get` with these arguments (JSON object text).
pub fn prompt_get(arguments: &str) -> PromptAction {
    PromptAction::Get(arguments.to_string())
}

/// A completion of `argument` from what the user typed so far (`value`), with no
/// other argument resolved (`{}`): wrap it in `ResourceAction::Complete` or
/// `PromptAction::Complete`.
pub fn completion(argument: &str, value: &str) -> Completion {
    Completion {
        argument: argument.to_string(),
        value: value.to_string(),
        context: "{}".to_string(),
    }
}

/// An identity with the given scopes.
pub fn identity(agent: &str, org: &str, scopes: &[&str]) -> Identity {
    Identity {
        agent: agent.to_string(),
        org: org.to_string(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

/// A request context.
pub fn context(
    identity: Identity,
    declaration: Option<Vec<ServerRule>>,
    connector: Connector,
) -> Context {
    Context {
        identity,
        declaration,
        connector,
    }
}

/// A context for agent `agent` of org `org` with scope `mcp:call` and no declaration.
pub fn simple_context(connector: Connector) -> Context {
    context(identity("agent", "org", &["mcp:call"]), None, connector)
}

/// An `mcpServers` rule with optional required patterns and no hints.
pub fn rule(url: &str, required: Option<&[&str]>) -> ServerRule {
    rule_with(url, required, HintFilter::default())
}

/// An `mcpServers` rule with optional required patterns and hints.
pub fn rule_with(url: &str, required: Option<&[&str]>, hints: HintFilter) -> ServerRule {
    ServerRule {
        url: url.to_string(),
        tools: Some(ToolConstraints {
            required: required.map(|r| r.iter().map(|s| s.to_string()).collect()),
            read_only: hints.read_only,
            destructive: hints.destructive,
            idempotent: hints.idempotent,
            open_world: hints.open_world,
        }),
    }
}

/// An `mcpServers` rule with `tools` omitted altogether.
pub fn url_rule(url: &str) -> ServerRule {
    ServerRule {
        url: url.to_string(),
        tools: None,
    }
}

/// How the tool of a [`HintCase`] is annotated for the hint under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolHint {
    AnnotatedTrue,
    AnnotatedFalse,
    Unannotated,
}

/// One row of the hint table: a single hint set to `required` (`None` = omitted)
/// against a tool annotated as `tool` for that hint (other hints unannotated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintCase {
    pub hint: Hint,
    pub required: Option<bool>,
    pub tool: ToolHint,
    /// Whether the tool passes, as the seed document's table says.
    pub passes: bool,
}

impl HintCase {
    /// A filter setting only this row's hint.
    pub fn filter(&self) -> HintFilter {
        let mut f = HintFilter::default();
        let slot = match self.hint {
            Hint::ReadOnly => &mut f.read_only,
            Hint::Destructive => &mut f.destructive,
            Hint::Idempotent => &mut f.idempotent,
            Hint::OpenWorld => &mut f.open_world,
        };
        *slot = self.required;
        f
    }

    /// The tool's annotations: only this row's hint, as `tool` says.
    pub fn annotations(&self) -> Annotations {
        let value = match self.tool {
            ToolHint::AnnotatedTrue => Some(true),
            ToolHint::AnnotatedFalse => Some(false),
            ToolHint::Unannotated => None,
        };
        let mut a = unannotated();
        let slot = match self.hint {
            Hint::ReadOnly => &mut a.read_only,
            Hint::Destructive => &mut a.destructive,
            Hint::Idempotent => &mut a.idempotent,
            Hint::OpenWorld => &mut a.open_world,
        };
        *slot = value;
        a
    }
}

const fn row(hint: Hint, required: Option<bool>, tool: ToolHint, passes: bool) -> HintCase {
    HintCase {
        hint,
        required,
        tool,
        passes,
    }
}

use Hint::{Destructive, Idempotent, OpenWorld, ReadOnly};
use ToolHint::{AnnotatedFalse, AnnotatedTrue, Unannotated};

/// The seed document's hint table, written out: 4 hints x {omitted, true, false}
/// x tool {annotated true, annotated false, unannotated}. MCP defaults for an
/// unannotated tool: readOnly false, destructive true, idempotent false,
/// openWorld true.
pub const HINT_TABLE: [HintCase; 36] = [
    // readOnly: omitted = no restriction; true = read-only tools only;
    // false = mutating tools only, unannotated included (default false).
    row(ReadOnly, None, AnnotatedTrue, true),
    row(ReadOnly, None, AnnotatedFalse, true),
    row(ReadOnly, None, Unannotated, true),
    row(ReadOnly, Some(true), AnnotatedTrue, true),
    row(ReadOnly, Some(true), AnnotatedFalse, false),
    row(ReadOnly, Some(true), Unannotated, false),
    row(ReadOnly, Some(false), AnnotatedTrue, false),
    row(ReadOnly, Some(false), AnnotatedFalse, true),
    row(ReadOnly, Some(false), Unannotated, true),
    // destructive: true = destructive only, unannotated included (default true);
    // false = non-destructive only.
    row(Destructive, None, AnnotatedTrue, true),
    row(Destructive, None, AnnotatedFalse, true),
    row(Destructive, None, Unannotated, true),
    row(Destructive, Some(true), AnnotatedTrue, true),
    row(Destructive, Some(true), AnnotatedFalse, false),
    row(Destructive, Some(true), Unannotated, true),
    row(Destructive, Some(false), AnnotatedTrue, false),
    row(Destructive, Some(false), AnnotatedFalse, true),
    row(Destructive, Some(false), Unannotated, false),
    // idempotent: true = idempotent only; false = non-idempotent only,
    // unannotated included (default false).
    row(Idempotent, None, AnnotatedTrue, true),
    row(Idempotent, None, AnnotatedFalse, true),
    row(Idempotent, None, Unannotated, true),
    row(Idempotent, Some(true), AnnotatedTrue, true),
    row(Idempotent, Some(true), AnnotatedFalse, false),
    row(Idempotent, Some(true), Unannotated, false),
    row(Idempotent, Some(false), AnnotatedTrue, false),
    row(Idempotent, Some(false), AnnotatedFalse, true),
    row(Idempotent, Some(false), Unannotated, true),
    // openWorld: true = open-world only, unannotated included (default true);
    // false = closed-world only.
    row(OpenWorld, None, AnnotatedTrue, true),
    row(OpenWorld, None, AnnotatedFalse, true),
    row(OpenWorld, None, Unannotated, true),
    row(OpenWorld, Some(true), AnnotatedTrue, true),
    row(OpenWorld, Some(true), AnnotatedFalse, false),
    row(OpenWorld, Some(true), Unannotated, true),
    row(OpenWorld, Some(false), AnnotatedTrue, false),
    row(OpenWorld, Some(false), AnnotatedFalse, true),
    row(OpenWorld, Some(false), Unannotated, false),
];
