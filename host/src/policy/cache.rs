//! Reused decisions of deterministic policies.
//!
//! A policy that declares itself deterministic (`describe`) answers its list
//! filters and `check-call` as a pure function of the inputs it reads: the agent
//! and the connector with their rules (named by a digest of them, so a reloaded
//! scope, declaration or blocklist never meets an old decision), the connector's
//! list of each kind (named by the catalog's version), the tool, and the arguments
//! when it reads them; for resource and prompt checks, the item as judged and
//! the action with everything it carries (a prompt's arguments, what a completion
//! typed). Every evaluation still runs in a fresh store; the cache only
//! skips evaluations whose answer is already known. It belongs to one chain, so a
//! reload starts with an empty cache, and a new tool list has a new version.
//!
//! Only verdicts are kept, never failures: a timeout under load is retried on the
//! next request. The cache is bounded; when a map is full it is cleared (the
//! working set of agents x tools is small next to the bound, so this is rare and
//! cheaper than tracking recency on every hit).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::bindings::Verdict;
use super::chain::ListKind;

/// Most call decisions kept per chain.
const MAX_CALLS: usize = 100_000;
/// Most list decisions (one per policy, agent and connector list) kept per chain.
const MAX_LISTS: usize = 10_000;

/// Decisions served from a cache since start, for `/metrics` (counted by the chain
/// once a request's answer is final, so a lookup pass that fell back to evaluating
/// is not counted twice).
static HITS: AtomicU64 = AtomicU64::new(0);

/// Decisions served from a cache since start.
pub(crate) fn cached_decisions() -> u64 {
    HITS.load(Ordering::Relaxed)
}

/// Adds `n` reused decisions to [`HITS`].
pub(super) fn count_hits(n: u64) {
    if n > 0 {
        HITS.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a `check-call` decision depends on: the call (shared by every policy of
/// the chain, built once per call) and which policy asks.
#[derive(Debug, Clone)]
pub(super) struct CallKey {
    pub policy: usize,
    pub call: Arc<CallInputs>,
    /// Whether the policy reads the arguments (part of the key only then).
    pub with_arguments: bool,
}

/// The inputs of one `tools/call` a deterministic policy can read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CallInputs {
    pub agent: String,
    /// `Subject::rules_stamp`: the agent's and the connector's rules.
    pub rules: u64,
    pub connector: String,
    pub tools_version: u64,
    pub tool: String,
    /// The arguments' JSON text; compared only for policies that read them.
    pub arguments: String,
}

impl CallKey {
    fn arguments(&self) -> Option<&str> {
        self.with_arguments.then_some(self.call.arguments.as_str())
    }
}

impl PartialEq for CallKey {
    fn eq(&self, other: &Self) -> bool {
        let c = (&self.call, &other.call);
        self.policy == other.policy
            && c.0.agent == c.1.agent
            && c.0.rules == c.1.rules
            && c.0.connector == c.1.connector
            && c.0.tools_version == c.1.tools_version
            && c.0.tool == c.1.tool
            && self.arguments() == other.arguments()
    }
}

impl Eq for CallKey {}

impl std::hash::Hash for CallKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.policy.hash(h);
        self.call.agent.hash(h);
        self.call.rules.hash(h);
        self.call.connector.hash(h);
        self.call.tools_version.hash(h);
        self.call.tool.hash(h);
        self.arguments().hash(h);
    }
}

/// What a list filter's decision depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ListKey {
    pub policy: usize,
    pub kind: ListKind,
    pub agent: String,
    pub rules: u64,
    pub connector: String,
    /// The catalog's version of the connector's list of that kind.
    pub version: u64,
    /// And of its tool list, which every filter's context carries.
    pub tools_version: u64,
}

/// What a resource or prompt check depends on: the inputs ([`Asked`]) and which
/// policy asks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ItemKey {
    pub policy: usize,
    pub asked: Asked,
}

/// The inputs of one resource or prompt check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Asked {
    agent: String,
    rules: u64,
    connector: String,
    tools_version: u64,
    /// The item's JSON text as judged.
    item: String,
    /// The action with everything it carries.
    action: String,
}

impl Asked {
    pub(super) fn new(
        subject: &super::chain::Subject,
        item: &serde_json::Value,
        action: String,
    ) -> Asked {
        Asked {
            agent: subject.identity.agent.clone(),
            rules: subject.rules_stamp(),
            connector: subject.connector.id.clone(),
            tools_version: subject.tools_version,
            item: item.to_string(),
            action,
        }
    }
}

#[derive(Default)]
pub(super) struct DecisionCache {
    calls: Mutex<HashMap<CallKey, Verdict>>,
    items: Mutex<HashMap<ItemKey, Verdict>>,
    lists: Mutex<HashMap<ListKey, Arc<Vec<Verdict>>>>,
}

impl DecisionCache {
    pub(super) fn call(&self, key: &CallKey) -> Option<Verdict> {
        self.calls.lock().expect("decision cache").get(key).cloned()
    }

    pub(super) fn put_call(&self, key: CallKey, verdict: Verdict) {
        let mut calls = self.calls.lock().expect("decision cache");
        if calls.len() >= MAX_CALLS {
            calls.clear();
        }
        calls.insert(key, verdict);
    }

    pub(super) fn item(&self, key: &ItemKey) -> Option<Verdict> {
        self.items.lock().expect("decision cache").get(key).cloned()
    }

    pub(super) fn put_item(&self, key: ItemKey, verdict: Verdict) {
        let mut items = self.items.lock().expect("decision cache");
        if items.len() >= MAX_CALLS {
            items.clear();
        }
        items.insert(key, verdict);
    }

    pub(super) fn list(&self, key: &ListKey) -> Option<Arc<Vec<Verdict>>> {
        self.lists.lock().expect("decision cache").get(key).cloned()
    }

    pub(super) fn put_list(&self, key: ListKey, verdicts: Arc<Vec<Verdict>>) {
        let mut lists = self.lists.lock().expect("decision cache");
        if lists.len() >= MAX_LISTS {
            lists.clear();
        }
        lists.insert(key, verdicts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tool: &str, arguments: Option<&str>) -> CallKey {
        CallKey {
            policy: 0,
            call: Arc::new(CallInputs {
                agent: "a".into(),
                rules: 0,
                connector: "c".into(),
                tools_version: 1,
                tool: tool.into(),
                arguments: arguments.unwrap_or("{\"ignored\":true}").into(),
            }),
            with_arguments: arguments.is_some(),
        }
    }

    #[test]
    fn a_decision_is_found_only_under_all_of_its_inputs() {
        let cache = DecisionCache::default();
        cache.put_call(key("echo", Some("{}")), Verdict::Allow);
        assert!(cache.call(&key("echo", Some("{}"))).is_some());
        assert!(cache.call(&key("echo", Some("{\"x\":1}"))).is_none());
        assert!(cache.call(&key("echo", None)).is_none());
        assert!(cache.call(&key("other", Some("{}"))).is_none());
        let newer = CallKey {
            call: Arc::new(CallInputs {
                tools_version: 2,
                ..CallInputs::clone(&key("echo", Some("{}")).call)
            }),
            ..key("echo", Some("{}"))
        };
        assert!(cache.call(&newer).is_none());
        // A policy that does not read the arguments: any arguments find the decision.
        cache.put_call(key("quiet", None), Verdict::Allow);
        let mut other_args = key("quiet", Some("{\"x\":2}"));
        other_args.with_arguments = false;
        assert!(cache.call(&other_args).is_some());
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let cache = DecisionCache::default();
        for i in 0..MAX_CALLS + 5 {
            cache.put_call(key(&format!("t{i}"), None), Verdict::Allow);
        }
        let len = cache.calls.lock().unwrap().len();
        assert!(len <= MAX_CALLS, "{len}");
        assert!(
            cache
                .call(&key(&format!("t{}", MAX_CALLS + 4), None))
                .is_some()
        );
    }
}
