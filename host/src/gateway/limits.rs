//! Per-agent limits on what one agent holds open at once, so one agent cannot use up
//! the gateway's connections (file descriptors) and lock every other agent out:
//! connections that carry its requests (`server.max_connections_per_agent`), requests
//! in flight (`server.max_requests_per_agent`, counting a call that goes on after
//! its agent disconnected) and GET streams (`server.max_streams_per_agent`).
//!
//! A [`Permit`] holds one unit until it is dropped. Beyond a limit the agent gets
//! 429 and an audit row (`Gateway::audit_refused`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a permit holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    Connection,
    Request,
    Stream,
}

impl Held {
    /// The config key of the limit, for messages and audit reasons.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Held::Connection => "server.max_connections_per_agent",
            Held::Request => "server.max_requests_per_agent",
            Held::Stream => "server.max_streams_per_agent",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One agent's counts, by [`Held`].
#[derive(Default)]
struct Counts([AtomicUsize; 3]);

/// The limits and every agent's counts.
pub(crate) struct AgentLimits {
    max: [usize; 3],
    agents: Mutex<HashMap<String, Arc<Counts>>>,
}

/// One unit of an agent's limit, given back when dropped.
pub(crate) struct Permit {
    counts: Arc<Counts>,
    held: Held,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counts.0[self.held.index()].fetch_sub(1, Ordering::AcqRel);
    }
}

/// An agent at its limit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AtLimit {
    pub held: Held,
    pub limit: usize,
}

impl AgentLimits {
    pub(crate) fn new(connections: usize, requests: usize, streams: usize) -> AgentLimits {
        AgentLimits {
            max: [connections, requests, streams],
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// One more `held` for `agent`, unless it is at its limit.
    pub(crate) fn acquire(&self, agent: &str, held: Held) -> Result<Permit, AtLimit> {
        let counts = {
            let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
            agents.entry(agent.to_string()).or_default().clone()
        };
        let limit = self.max[held.index()];
        let count = &counts.0[held.index()];
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        });
        match taken {
            Ok(_) => Ok(Permit { counts, held }),
            Err(_) => Err(AtLimit { held, limit }),
        }
    }

    /// What `agent` holds now.
    #[cfg(test)]
    fn held(&self, agent: &str, held: Held) -> usize {
        let agents = self.agents.lock().unwrap();
        agents
            .get(agent)
            .map_or(0, |c| c.0[held.index()].load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_holds_at_most_its_limit_and_gets_units_back_when_dropped() {
        let limits = AgentLimits::new(2, 1, 1);
        let a = limits.acquire("a", Held::Connection).unwrap();
        let _b = limits.acquire("a", Held::Connection).unwrap();
        assert_eq!(
            limits.acquire("a", Held::Connection).err(),
            Some(AtLimit {
                held: Held::Connection,
                limit: 2
            })
        );
        // Another agent, and another kind, are counted apart.
        assert!(limits.acquire("b", Held::Connection).is_ok());
        let _r = limits.acquire("a", Held::Request).unwrap();
        assert!(limits.acquire("a", Held::Request).is_err());
        assert!(limits.acquire("a", Held::Stream).is_ok());
        drop(a);
        assert_eq!(limits.held("a", Held::Connection), 1);
        assert!(limits.acquire("a", Held::Connection).is_ok());
    }
}
