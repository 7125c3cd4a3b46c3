//! The in-process quota counter (one gateway): a counter per org for its current window.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub(super) struct Memory {
    counters: Mutex<HashMap<String, (u64, u64)>>,
}

impl Memory {
    /// Counts one call in `window` and returns the calls counted in it so far.
    pub(super) fn incr(&self, org: &str, window: u64) -> u64 {
        let mut map = self.counters.lock().expect("quota lock");
        let entry = map.entry(org.to_string()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 += 1;
        entry.1
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_per_window() {
        let m = super::Memory::default();
        assert_eq!(m.incr("a", 1), 1);
        assert_eq!(m.incr("a", 1), 2);
        assert_eq!(m.incr("b", 1), 1);
        assert_eq!(m.incr("a", 2), 1);
    }
}
