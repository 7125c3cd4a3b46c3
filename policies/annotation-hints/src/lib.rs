//! annotation-hints: only tools whose MCP annotation hints match the settings.
//!
//! Settings: `{"read_only"?, "destructive"?, "idempotent"?, "open_world"?: bool,
//! "agents"?, "orgs"?: [glob]}`. For identities whose agent id matches `agents`
//! and whose org matches `orgs` (an omitted list matches everyone), a tool is
//! listed and callable only if each set hint equals its effective value (the MCP
//! default when unannotated); others are hidden and calls are refused with
//! `-32601 Tool not found`, the mismatch as audit reason. Hints are a tool
//! notion: resources and prompts are not governed (their hooks are off in the
//! manifest).

use portcullis_policy_sdk::tool_rules_manifest;
use portcullis_policy_sdk::{
    Context, HintFilter, INTERNAL_ERROR, Identity, Manifest, Policy, SettingsObject,
    TOOL_NOT_FOUND, Tool, Verdict, export_policy, glob_match_any, hint_mismatch,
};

/// The annotation-hints policy.
pub struct AnnotationHints;

/// Parsed settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub hints: HintFilter,
    /// Agent id patterns; `None` = every agent.
    pub agents: Option<Vec<String>>,
    /// Org patterns; `None` = every org.
    pub orgs: Option<Vec<String>>,
}

impl Settings {
    /// Parses and checks settings; errors name the offending key.
    pub fn parse(settings: &str) -> Result<Self, String> {
        let mut o = SettingsObject::parse(settings)?;
        let hints = HintFilter {
            read_only: o.bool("read_only")?,
            destructive: o.bool("destructive")?,
            idempotent: o.bool("idempotent")?,
            open_world: o.bool("open_world")?,
        };
        let agents = non_empty_list(&mut o, "agents")?;
        let orgs = non_empty_list(&mut o, "orgs")?;
        o.finish()?;
        Ok(Settings {
            hints,
            agents,
            orgs,
        })
    }

    /// Whether the policy applies to this identity.
    pub fn applies_to(&self, identity: &Identity) -> bool {
        let matches = |list: &Option<Vec<String>>, text: &str| {
            list.as_deref().is_none_or(|ps| glob_match_any(ps, text))
        };
        matches(&self.agents, &identity.agent) && matches(&self.orgs, &identity.org)
    }

    fn verdict(&self, ctx: &Context, tool: &Tool) -> Verdict {
        if !self.applies_to(&ctx.identity) {
            return Verdict::Allow;
        }
        match hint_mismatch(self.hints, &tool.annotations) {
            None => Verdict::Allow,
            Some(m) => TOOL_NOT_FOUND.deny(format!(
                "tool {} of connector {}: {m}",
                tool.name, ctx.connector.id
            )),
        }
    }
}

/// An optional list key; an empty list is refused (it would match nobody).
fn non_empty_list(o: &mut SettingsObject, key: &str) -> Result<Option<Vec<String>>, String> {
    match o.string_list(key)? {
        Some(list) if list.is_empty() => Err(format!(
            "settings key `{key}` must not be empty (omit it to match everyone)"
        )),
        list => Ok(list),
    }
}

/// Fail closed when settings the host accepted cannot be read at call time.
fn settings_error(e: &str) -> Verdict {
    INTERNAL_ERROR.deny(format!("annotation-hints settings unreadable: {e}"))
}

impl Policy for AnnotationHints {
    fn validate_settings(settings: &str) -> Result<(), String> {
        Settings::parse(settings).map(|_| ())
    }

    /// Listing and calling, from the tool's own annotations.
    fn describe(_settings: &str) -> Manifest {
        tool_rules_manifest()
    }

    fn check_tool(settings: &str, ctx: &Context, tool: &Tool) -> Verdict {
        match Settings::parse(settings) {
            Ok(s) => s.verdict(ctx, tool),
            Err(e) => settings_error(&e),
        }
    }

    fn filter_tools(settings: &str, ctx: &Context) -> Vec<Verdict> {
        match Settings::parse(settings) {
            Ok(s) => ctx
                .connector
                .tools
                .iter()
                .map(|t| s.verdict(ctx, t))
                .collect(),
            Err(e) => vec![settings_error(&e); ctx.connector.tools.len()],
        }
    }
}

export_policy!(AnnotationHints);

#[cfg(test)]
mod tests;
