//! `portcullis policy new NAME --lang rust|js|python`: a policy project that builds
//! as it is, with the WIT contract copied in, a manifest for `policy build`, a
//! sample fixture file for `policy test`, and a README with the build steps.
//!
//! The policy of every template allows every tool and prompt and passes every
//! result, and shows a resource check beside the tool hooks: resources and
//! resource templates whose URI contains `/private/` are hidden from the lists and
//! refused on read, subscribe and completion (`-32002 Resource not found`).

use std::path::{Path, PathBuf};

use super::build::{Lang, MANIFEST};

/// The WIT contract this gateway loads, copied into every new project.
pub(crate) const POLICY_WIT: &str = include_str!("../../../wit/policy.wit");

/// The version of the WIT package in [`POLICY_WIT`] (`0.2.0` from
/// `package portcullis:policy@0.2.0;`), which the JavaScript template imports and
/// the README names.
fn wit_version() -> &'static str {
    POLICY_WIT
        .lines()
        .find_map(|l| l.trim().strip_prefix("package portcullis:policy@"))
        .map(|v| v.trim_end_matches(';').trim())
        .expect("wit/policy.wit declares package portcullis:policy@VERSION")
}

/// Where the Rust guest SDK is, for `--lang rust`: `--sdk`, `PORTCULLIS_SDK`, or the
/// source tree this binary was built from.
fn find_sdk(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidates: Vec<(PathBuf, &str)> = [
        explicit.map(|p| (p.to_path_buf(), "--sdk")),
        std::env::var_os("PORTCULLIS_SDK").map(|p| (PathBuf::from(p), "PORTCULLIS_SDK")),
        Some((
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk")),
            "the Portcullis source tree",
        )),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (p, from) in &candidates {
        if p.join("Cargo.toml").is_file() {
            return p
                .canonicalize()
                .map_err(|e| anyhow::anyhow!("{} ({from}): {e}", p.display()));
        }
        if *from != "the Portcullis source tree" {
            anyhow::bail!(
                "{} ({from}) is not the guest SDK directory (no Cargo.toml)",
                p.display()
            );
        }
    }
    anyhow::bail!(
        "cannot find the Rust guest SDK (portcullis-policy-sdk): pass --sdk PATH or set \
         PORTCULLIS_SDK to the guest-sdk directory of the Portcullis source"
    )
}

/// Checks a policy name: it becomes a crate/package name and a file name.
pub(crate) fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        anyhow::bail!(
            "policy name {name:?}: use 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter"
        );
    }
    Ok(())
}

fn manifest(name: &str, lang: Lang) -> String {
    let entry = match lang {
        Lang::Rust => String::new(),
        Lang::Js => "entry = \"policy.js\"          # the ES module to componentize\n".into(),
        Lang::Python => {
            "module = \"app\"               # the Python module to componentize\n".into()
        }
    };
    format!(
        r#"# Portcullis policy project: `portcullis policy build` reads this file.
[policy]                       # embedded in the component (see `portcullis policy inspect`)
name = "{name}"
version = "0.1.0"
language = "{lang}"
description = "A Portcullis policy."
author = ""
license = "Apache-2.0"
source = ""

[build]
wit = "wit"                    # the WIT package (a copy of the gateway's wit/)
world = "policy"
out = "dist/{name}.wasm"
{entry}"#,
        lang = lang.as_str()
    )
}

const FIXTURES: &str = r#"# Offline decision tests: `portcullis policy test dist/NAME.wasm fixtures.toml`
# (see `portcullis policy test --help` for every field).
settings = {}

[identity]
agent = "reporter"
org = "acme"
scopes = ["mcp:call"]

[connector]
id = "conn_demo"
name = "Demo"
target_url = "https://demo.example/mcp"
tools = ["echo", { name = "delete_all", annotations = { destructiveHint = true } }]
resources = ["file:///docs/readme.md", "file:///home/private/keys.txt"]
templates = ["file:///docs/{path}", "file:///home/private/{file}"]
prompts = ["summarise"]

[[lists]]
name = "every tool is listed"
visible = ["echo", "delete_all"]

[[resource_lists]]
name = "private resources are hidden"
visible = ["file:///docs/readme.md"]

[[resource_lists]]
name = "private templates are hidden"
kind = "templates"
visible = ["file:///docs/{path}"]

[[resources]]
name = "a private resource cannot be read"
uri = "file:///home/private/keys.txt"
action = "read"
expect = "deny"
code = -32002
message = "Resource not found"

[[resources]]
name = "other resources can"
uri = "file:///docs/readme.md"
expect = "allow"

[[prompt_lists]]
name = "every prompt is listed"
visible = ["summarise"]

[[calls]]
name = "echo is allowed"
tool = "echo"
arguments = { text = "hello" }
expect = "allow"

[[results]]
name = "results pass unchanged"
tool = "echo"
result = { content = [{ type = "text", text = "hello" }] }
expect = "pass"

[[validate]]
name = "empty settings are fine"
settings = {}
expect = "ok"
"#;

fn rust_files(name: &str, sdk: &Path) -> Vec<(String, String)> {
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
# The guest SDK: a `Policy` trait with permissive defaults and `export_policy!`.
portcullis-policy-sdk = {{ path = "{sdk}" }}

[profile.release]
opt-level = "s"
lto = true
debug = false

# A project of its own, even when created inside another Cargo workspace.
[workspace]
"#,
        sdk = sdk.display()
    );
    let lib = format!(
        r#"//! {name}: a Portcullis policy.
//!
//! Every method of `Policy` has a permissive default; override the ones your policy
//! decides about. The gateway instantiates the policy afresh for each evaluation:
//! everything arrives as arguments (`settings` is the JSON the operator wrote under
//! `[[policies]] settings`).
//!
//! As an example, resources whose URI matches `PRIVATE_RESOURCES` are hidden and
//! refused; everything else is allowed.

use portcullis_policy_sdk::{{
    Context, Manifest, Policy, RESOURCE_NOT_FOUND, Resource, ResultVerdict, Tool, Verdict,
    export_policy, glob_match, manifest,
}};

/// Resources (and resource templates) whose URI matches this pattern are hidden
/// (`*` matches any run of characters).
const PRIVATE_RESOURCES: &str = "*/private/*";

pub struct MyPolicy;

impl Policy for MyPolicy {{
    /// Refuse bad settings at load time with `Err(message)`.
    fn validate_settings(_settings: &str) -> Result<(), String> {{
        Ok(())
    }}

    /// What this policy implements and reads. Switch off what it does not do: the
    /// gateway then skips those hooks and inputs, and reuses the decisions of a
    /// deterministic policy (no clock, no randomness) for identical inputs.
    fn describe(_settings: &str) -> Manifest {{
        manifest()
    }}

    /// Listing and calling: deny with e.g.
    /// `portcullis_policy_sdk::TOOL_NOT_FOUND.deny("why, for the audit log")`.
    fn check_tool(_settings: &str, _ctx: &Context, _tool: &Tool) -> Verdict {{
        Verdict::Allow
    }}

    /// A call, with its arguments (JSON text).
    fn check_call(_settings: &str, _ctx: &Context, _tool: &Tool, _arguments: &str) -> Verdict {{
        Verdict::Allow
    }}

    /// The post-call hook: `Pass`, `Replace(json)` or `Deny(denial)`.
    fn check_result(_settings: &str, _ctx: &Context, _tool: &Tool, _result: &str) -> ResultVerdict {{
        ResultVerdict::Pass
    }}

    /// Resources and resource templates, for listing and for read, subscribe and
    /// completion alike. Deny with `RESOURCE_NOT_FOUND`: what the gateway answers
    /// for a resource that does not exist, so a hidden one looks the same.
    fn check_resource_item(_settings: &str, ctx: &Context, item: &Resource) -> Verdict {{
        if glob_match(PRIVATE_RESOURCES, &item.uri) {{
            RESOURCE_NOT_FOUND.deny(format!(
                "resource {{}} of connector {{}} is private",
                item.uri, ctx.connector.id
            ))
        }} else {{
            Verdict::Allow
        }}
    }}

    // Also available, each with a permissive default: `check_resource` (with the
    // action), `check_resource_contents` (the ReadResourceResult), and for prompts
    // `check_prompt_item`, `check_prompt` and `check_prompt_result`.
}}

export_policy!(MyPolicy);

#[cfg(test)]
mod tests {{
    use super::*;
    use portcullis_policy_sdk::ResourceAction;
    use portcullis_policy_sdk::testing::{{connector, resource, simple_context, tool}};

    #[test]
    fn allows_tools() {{
        let ctx = simple_context(connector("conn_a", "https://a.example/mcp", vec![tool("echo")]));
        assert!(MyPolicy::check_call("{{}}", &ctx, &tool("echo"), "{{}}").is_allow());
    }}

    #[test]
    fn hides_private_resources() {{
        let ctx = simple_context(connector("conn_a", "https://a.example/mcp", vec![]));
        let items = [
            resource("file:///docs/readme.md", "readme"),
            resource("file:///home/private/keys.txt", "keys"),
        ];
        let listed = MyPolicy::filter_resources("{{}}", &ctx, &items);
        assert!(listed[0].is_allow());
        assert_eq!(listed[1].denial().map(|d| d.code), Some(-32002));
        let read = MyPolicy::check_resource("{{}}", &ctx, &items[1], &ResourceAction::Read);
        assert_eq!(read, listed[1]);
    }}
}}
"#
    );
    vec![
        ("Cargo.toml".into(), cargo),
        ("src/lib.rs".into(), lib),
        (".gitignore".into(), "/target\n/dist\n".into()),
    ]
}

fn js_files(name: &str) -> Vec<(String, String)> {
    let policy = format!(
        r#"// {name}: a Portcullis policy in JavaScript (componentize-js).
//
// Each export is a function of the WIT world `policy` (camelCase names). Records are
// plain objects with camelCase fields; a verdict is {{ tag: 'allow' }} or
// {{ tag: 'deny', val: {{ code, message, reason }} }}; a result verdict is
// {{ tag: 'pass' }}, {{ tag: 'replace', val: jsonText }} or {{ tag: 'deny', val: denial }}.
// `settings`, `args` and `result` are JSON text. As an example, resources whose URI
// matches PRIVATE_RESOURCES are hidden and refused; everything else is allowed.

import {{ log }} from 'portcullis:policy/host@{version}';

// Resources (and resource templates) whose URI matches are hidden.
const PRIVATE_RESOURCES = /\/private\//;

// Throw a string to refuse the settings.
export function validateSettings(settings) {{}}

// What this policy implements and reads. Switch off what it does not do: the
// gateway then skips those hooks and inputs, and reuses the decisions of a
// deterministic policy (no clock, no randomness) for identical inputs.
export function describe(settings) {{
  return {{
    filterTools: true,
    checkCall: true,
    checkResult: true,
    readsConnectorTools: true,
    readsArguments: true,
    deterministic: false,
    readsToolDefinitions: true,
    filterResources: true,
    checkResource: true,
    checkResourceContents: true,
    filterPrompts: true,
    checkPrompt: true,
    checkPromptResult: true,
  }};
}}

// One verdict per tool of ctx.connector.tools, in the same order.
export function filterTools(settings, ctx) {{
  return ctx.connector.tools.map(() => ({{ tag: 'allow' }}));
}}

export function checkCall(settings, ctx, tool, args) {{
  log('debug', `{name}: ${{ctx.identity.agent}} calls ${{tool.name}}`);
  return {{ tag: 'allow' }};
}}

export function checkResult(settings, ctx, tool, result) {{
  return {{ tag: 'pass' }};
}}

// A resource or template ({{ kind: 'resource' | 'template', uri, name, ... }}), for
// listing and for every request about it. -32002 "Resource not found" is what the
// gateway answers for a resource that does not exist, so a hidden one looks the same.
function resourceVerdict(ctx, item) {{
  if (!PRIVATE_RESOURCES.test(item.uri)) return {{ tag: 'allow' }};
  const reason = `resource ${{item.uri}} of connector ${{ctx.connector.id}} is private`;
  return {{ tag: 'deny', val: {{ code: -32002, message: 'Resource not found', reason }} }};
}}

// One verdict per item (all resources, or all templates), in the same order.
export function filterResources(settings, ctx, items) {{
  return items.map((item) => resourceVerdict(ctx, item));
}}

// action: {{ tag: 'read' }}, {{ tag: 'subscribe' }} or {{ tag: 'complete', val: completion }}.
export function checkResource(settings, ctx, item, action) {{
  return resourceVerdict(ctx, item);
}}

export function checkResourceContents(settings, ctx, item, result) {{
  return {{ tag: 'pass' }};
}}

// One verdict per prompt, in the same order.
export function filterPrompts(settings, ctx, items) {{
  return items.map(() => ({{ tag: 'allow' }}));
}}

// action: {{ tag: 'get', val: argumentsJson }} or {{ tag: 'complete', val: completion }}.
export function checkPrompt(settings, ctx, item, action) {{
  return {{ tag: 'allow' }};
}}

export function checkPromptResult(settings, ctx, item, result) {{
  return {{ tag: 'pass' }};
}}
"#,
        version = wit_version()
    );
    let package = format!(
        r#"{{
  "name": "{name}",
  "private": true,
  "version": "0.1.0",
  "type": "module",
  "scripts": {{
    "build": "portcullis policy build ."
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.17.9"
  }}
}}
"#
    );
    vec![
        ("policy.js".into(), policy),
        ("package.json".into(), package),
        (".gitignore".into(), "/node_modules\n/dist\n".into()),
    ]
}

fn python_files(name: &str) -> Vec<(String, String)> {
    let app = format!(
        r#""""{name}: a Portcullis policy in Python (componentize-py).

The class `WitWorld` implements the WIT world `policy` (snake_case names). Verdicts
are `types.Verdict_Allow()` / `types.Verdict_Deny(types.Denial(code, message,
reason))`; result verdicts `types.ResultVerdict_Pass()`,
`types.ResultVerdict_Replace(json_text)` or `types.ResultVerdict_Deny(denial)`.
`settings`, `arguments` and `result` are JSON text. As an example, resources whose
URI matches PRIVATE_RESOURCES are hidden and refused; everything else is allowed.
"""

import re

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

# Resources (and resource templates) whose URI matches are hidden.
PRIVATE_RESOURCES = re.compile(r"/private/")


def _resource_verdict(ctx, item):
    # -32002 "Resource not found" is what the gateway answers for a resource that
    # does not exist, so a hidden one looks the same.
    if not PRIVATE_RESOURCES.search(item.uri):
        return types.Verdict_Allow()
    reason = f"resource {{item.uri}} of connector {{ctx.connector.id}} is private"
    return types.Verdict_Deny(types.Denial(code=-32002, message="Resource not found", reason=reason))


class WitWorld(wit_world.WitWorld):
    def validate_settings(self, settings: str) -> None:
        # raise Err("message") to refuse the settings
        return None

    def describe(self, settings: str) -> types.Manifest:
        # What this policy implements and reads. Switch off what it does not do: the
        # gateway then skips those hooks and inputs, and reuses the decisions of a
        # deterministic policy (no clock, no randomness) for identical inputs.
        return types.Manifest(
            filter_tools=True,
            check_call=True,
            check_result=True,
            reads_connector_tools=True,
            reads_arguments=True,
            deterministic=False,
            reads_tool_definitions=True,
            filter_resources=True,
            check_resource=True,
            check_resource_contents=True,
            filter_prompts=True,
            check_prompt=True,
            check_prompt_result=True,
        )

    def filter_tools(self, settings, ctx):
        # one verdict per tool of ctx.connector.tools, in the same order
        return [types.Verdict_Allow() for _ in ctx.connector.tools]

    def check_call(self, settings, ctx, tool, arguments):
        host.log(types.Level.DEBUG, f"{name}: {{ctx.identity.agent}} calls {{tool.name}}")
        return types.Verdict_Allow()

    def check_result(self, settings, ctx, tool, result):
        return types.ResultVerdict_Pass()

    def filter_resources(self, settings, ctx, items):
        # one verdict per item (all resources, or all templates), in the same order
        return [_resource_verdict(ctx, item) for item in items]

    def check_resource(self, settings, ctx, item, action):
        # action: types.ResourceAction_Read(), _Subscribe() or _Complete(completion)
        return _resource_verdict(ctx, item)

    def check_resource_contents(self, settings, ctx, item, result):
        return types.ResultVerdict_Pass()

    def filter_prompts(self, settings, ctx, items):
        # one verdict per prompt, in the same order
        return [types.Verdict_Allow() for _ in items]

    def check_prompt(self, settings, ctx, item, action):
        # action: types.PromptAction_Get(arguments_json) or _Complete(completion)
        return types.Verdict_Allow()

    def check_prompt_result(self, settings, ctx, item, result):
        return types.ResultVerdict_Pass()
"#
    );
    vec![
        ("app.py".into(), app),
        (
            "requirements.txt".into(),
            "# Build tool: `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt`\ncomponentize-py==0.25.1\n".into(),
        ),
        (
            ".gitignore".into(),
            "/.venv\n/dist\n__pycache__/\n/wit_world\n/componentize_py_*\n".into(),
        ),
    ]
}

fn readme(name: &str, lang: Lang) -> String {
    let (tool, setup) = match lang {
        Lang::Rust => (
            "cargo build --release --target wasm32-wasip2",
            "rustup target add wasm32-wasip2",
        ),
        Lang::Js => (
            "componentize-js policy.js --wit wit --world-name policy -d http fetch-event -o dist/NAME.wasm",
            "npm install        # componentize-js (+ preview2-shim) into node_modules",
        ),
        Lang::Python => (
            "componentize-py -d wit -w policy componentize app -o dist/NAME.wasm",
            "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
        ),
    };
    format!(
        r#"# {name}

A Portcullis policy ({lang}) implementing the WIT world `portcullis:policy/policy@{version}`
(`wit/policy.wit`, copied from the gateway). As generated it allows every tool and
prompt and hides resources whose URI contains `/private/`; edit it to decide what
your policy should.

## Build

```sh
{setup}
portcullis policy build .          # runs: {tool}
                                   # and embeds [policy] metadata -> dist/{name}.wasm
```

## Test, inspect, sign

```sh
portcullis policy test dist/{name}.wasm fixtures.toml
portcullis policy inspect dist/{name}.wasm
portcullis policy keygen --out signer              # once: signer.key, signer.pub
portcullis policy sign dist/{name}.wasm --key signer.key
```

## Use

```toml
[[policies]]
module = "path/to/{name}.wasm"
settings = {{}}
```

The gateway reloads the chain when the file changes (build with
`portcullis policy build . -o path/to/{name}.wasm`: the file is replaced atomically).
"#,
        lang = lang.as_str(),
        tool = tool.replace("NAME", name),
        version = wit_version()
    )
}

/// Creates the project; the directory it was written to.
pub(crate) fn new_project(
    name: &str,
    lang: Lang,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        anyhow::bail!("{} exists and is not empty", dir.display());
    }
    let mut files: Vec<(String, String)> = vec![
        ("wit/policy.wit".into(), POLICY_WIT.to_string()),
        (MANIFEST.into(), manifest(name, lang)),
        ("fixtures.toml".into(), FIXTURES.replace("NAME", name)),
        ("README.md".into(), readme(name, lang)),
    ];
    files.extend(match lang {
        Lang::Rust => rust_files(name, &find_sdk(sdk)?),
        Lang::Js => js_files(name),
        Lang::Python => python_files(name),
    });
    for (rel, text) in files {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("args-guard").is_ok());
        assert!(check_name("Args").is_err());
        assert!(check_name("1x").is_err());
        assert!(check_name("a b").is_err());
    }

    #[test]
    fn writes_projects() {
        let tmp = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            let dir = tmp.path().join(lang.as_str());
            new_project("demo", lang, Some(&dir), None).unwrap();
            assert_eq!(
                std::fs::read_to_string(dir.join("wit/policy.wit")).unwrap(),
                POLICY_WIT
            );
            let m = super::super::build::Manifest::load(&dir).unwrap();
            assert_eq!(m.policy.name, "demo");
            assert_eq!(m.policy.language, lang);
            assert!(new_project("demo", lang, Some(&dir), None).is_err());
        }
        assert!(tmp.path().join("rust/src/lib.rs").is_file());
        assert!(tmp.path().join("js/policy.js").is_file());
        assert!(tmp.path().join("python/app.py").is_file());
    }

    #[test]
    fn templates_target_the_gateways_wit_version() {
        let version = wit_version();
        assert!(
            POLICY_WIT.contains(&format!("package portcullis:policy@{version};")),
            "{version}"
        );
        let policy = &js_files("demo")[0].1;
        assert!(
            policy.contains(&format!("from 'portcullis:policy/host@{version}'")),
            "{policy}"
        );
        assert!(readme("demo", Lang::Python).contains(&format!("policy@{version}`")));
    }

    #[test]
    fn templates_show_a_resource_check_and_every_hook() {
        let rust = &rust_files("demo", Path::new("/sdk"))[1].1;
        assert!(rust.contains("fn check_resource_item("), "{rust}");
        assert!(rust.contains("RESOURCE_NOT_FOUND.deny("), "{rust}");
        let js = &js_files("demo")[0].1;
        let py = &python_files("demo")[0].1;
        for hook in [
            "filterResources",
            "checkResource",
            "checkResourceContents",
            "filterPrompts",
            "checkPrompt",
            "checkPromptResult",
        ] {
            assert!(js.contains(&format!("export function {hook}(")), "{hook}");
        }
        for hook in [
            "filter_resources",
            "check_resource",
            "check_resource_contents",
            "filter_prompts",
            "check_prompt",
            "check_prompt_result",
        ] {
            assert!(py.contains(&format!("    def {hook}(self")), "{hook}");
        }
        for field in ["readsToolDefinitions: true", "checkPromptResult: true"] {
            assert!(js.contains(field), "{field}");
        }
        for field in ["reads_tool_definitions=True", "check_prompt_result=True"] {
            assert!(py.contains(field), "{field}");
        }
    }
}
