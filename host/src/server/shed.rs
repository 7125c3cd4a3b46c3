//! Keeping file descriptors for everyone. The gateway counts its open agent
//! connections against a budget taken from the process's descriptor limit, with
//! headroom for what else needs descriptors (upstream connections, the audit sink,
//! Redis, logs). A connection accepted beyond the budget makes room by shedding the
//! newest connection of the agent that holds the most, so the gateway keeps
//! accepting (and answering other agents) instead of failing `accept` with "Too many
//! open files" while one agent holds everything. Connections shed but not closed yet
//! still count: at half the budget again the accept loop waits for one to close.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Descriptors kept out of the budget whatever the limit (listeners, epoll, the
/// audit sink, Redis, log files, the policy engine).
const RESERVED: usize = 64;

/// The smallest budget, however low the limit.
const MIN_BUDGET: usize = 16;

/// The agent connections open now, by agent.
pub(crate) struct Connections {
    budget: usize,
    inner: Mutex<Inner>,
    /// Told whenever a connection closes (the accept loop may be waiting for room).
    closed: Notify,
}

#[derive(Default)]
struct Inner {
    open: usize,
    next_id: u64,
    /// Each agent's connections, oldest first: id and the signal that sheds it.
    by_agent: HashMap<String, Vec<(u64, Arc<Notify>)>>,
}

/// One open connection; dropped when it closes.
pub(super) struct Tracked {
    id: u64,
    table: Arc<Connections>,
    shed: Arc<Notify>,
    agent: Mutex<Option<String>>,
}

impl Connections {
    /// A table whose budget leaves room for upstream connections: half of what the
    /// descriptor limit leaves after [`RESERVED`], since a call in flight holds an
    /// upstream connection beside the agent's.
    pub(crate) fn for_limit(descriptors: usize) -> Arc<Connections> {
        let budget = (descriptors.saturating_sub(RESERVED) / 2).max(MIN_BUDGET);
        Arc::new(Connections {
            budget,
            inner: Mutex::new(Inner::default()),
            closed: Notify::new(),
        })
    }

    /// The most connections open at once, counting those shed but not closed yet:
    /// half the budget again. Shedding tells a connection to close; on a busy machine
    /// it may take a moment, and accepting on meanwhile could still run out of
    /// descriptors.
    fn ceiling(&self) -> usize {
        self.budget + self.budget / 2
    }

    /// Resolves when a connection may be accepted: at the ceiling, once one closes
    /// (the kernel's backlog holds the waiting ones, using none of ours).
    pub(super) async fn room(&self) {
        loop {
            let closed = self.closed.notified();
            let open = self.inner.lock().unwrap_or_else(|e| e.into_inner()).open;
            if open < self.ceiling() {
                return;
            }
            closed.await;
        }
    }

    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Counts an accepted connection. At the budget, the newest connection of the
    /// agent holding the most is told to close first.
    pub(super) fn accepted(self: &Arc<Self>) -> Tracked {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.open += 1;
        inner.next_id += 1;
        let id = inner.next_id;
        if inner.open > self.budget {
            shed_heaviest(&mut inner);
        }
        Tracked {
            id,
            table: self.clone(),
            shed: Arc::new(Notify::new()),
            agent: Mutex::new(None),
        }
    }
}

/// Tells the newest connection of the agent with the most to close.
fn shed_heaviest(inner: &mut Inner) {
    let Some((agent, _)) = inner
        .by_agent
        .iter()
        .max_by_key(|(_, conns)| conns.len())
        .map(|(a, c)| (a.clone(), c.len()))
    else {
        return;
    };
    if let Some(conns) = inner.by_agent.get_mut(&agent)
        && let Some((_, shed)) = conns.pop()
    {
        tracing::warn!(
            agent,
            "descriptor budget reached; shedding this agent's newest connection"
        );
        shed.notify_one();
    }
}

impl Tracked {
    /// The connection carries `agent`'s requests (its first one decides).
    pub(super) fn attribute(&self, agent: &str) {
        let mut mine = self.agent.lock().unwrap_or_else(|e| e.into_inner());
        if mine.is_some() {
            return;
        }
        *mine = Some(agent.to_string());
        let mut inner = self.table.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .by_agent
            .entry(agent.to_string())
            .or_default()
            .push((self.id, self.shed.clone()));
    }

    /// Resolves when the connection is to be shed.
    pub(super) async fn shed(&self) {
        self.shed.notified().await
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let agent = self.agent.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut inner = self.table.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.open -= 1;
        self.table.closed.notify_waiters();
        if let Some(agent) = agent
            && let Some(conns) = inner.by_agent.get_mut(&agent)
        {
            conns.retain(|(id, _)| *id != self.id);
            if conns.is_empty() {
                inner.by_agent.remove(&agent);
            }
        }
    }
}

/// The process's descriptor limit, after raising the soft limit to the hard one.
pub(crate) fn descriptor_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_budget_the_heaviest_agents_newest_connection_is_shed() {
        let table = Connections::for_limit(RESERVED + 2 * MIN_BUDGET);
        assert_eq!(table.budget(), MIN_BUDGET);
        let mut heavy: Vec<Tracked> = (0..MIN_BUDGET - 2)
            .map(|_| {
                let t = table.accepted();
                t.attribute("heavy");
                t
            })
            .collect();
        let light = table.accepted();
        light.attribute("light");
        let unattributed = table.accepted();
        assert_eq!(table.inner.lock().unwrap().open, MIN_BUDGET);
        // One more: the newest of "heavy" is told to close, nobody else.
        let _newcomer = table.accepted();
        let newest = heavy.pop().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), newest.shed())
            .await
            .expect("the heaviest agent's newest connection is shed");
        for (who, t) in [
            ("oldest heavy", &heavy[0]),
            ("light", &light),
            ("unattributed", &unattributed),
        ] {
            let shed = tokio::time::timeout(std::time::Duration::from_millis(20), t.shed()).await;
            assert!(shed.is_err(), "{who} was shed");
        }
        drop(newest);
        assert_eq!(
            table.inner.lock().unwrap().by_agent["heavy"].len(),
            MIN_BUDGET - 3
        );
    }

    #[tokio::test]
    async fn at_the_ceiling_accepting_waits_for_a_connection_to_close() {
        let table = Connections::for_limit(RESERVED + 2 * MIN_BUDGET);
        let short = std::time::Duration::from_millis(20);
        let mut open: Vec<Tracked> = (0..table.ceiling() - 1).map(|_| table.accepted()).collect();
        tokio::time::timeout(short, table.room())
            .await
            .expect("room below the ceiling");
        open.push(table.accepted());
        assert!(
            tokio::time::timeout(short, table.room()).await.is_err(),
            "no room at the ceiling"
        );
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.room().await }
        });
        tokio::time::sleep(short).await;
        drop(open.pop());
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("room once one closes")
            .unwrap();
    }
}
