//! Calls a thread has counted in Redis ahead of use ("blocks"). When an org is busy on
//! a thread (a script call carries more than one check) and far from its limit, the
//! script adds a block of calls to the org's counter besides the batch, and the
//! thread's next checks of that org take their positions from the block without a
//! round trip. The counter in Redis stays the sum of admitted and reserved calls, so a
//! fleet never admits more than the limit; a block that is not used up within its
//! lease is given back (`Redis::release`).
//!
//! Blocks exist only while the counter is below half the limit and are at most a
//! thousandth of it, so near the limit every check goes to Redis and the fleet admits
//! exactly the limit; a gateway that stops while holding blocks loses at most one
//! block per thread and org for the rest of the window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// How many calls a thread takes ahead for an org allowed `limit` calls per window:
/// `reserve` (the `quota.reserve` setting), at most a thousandth of the limit; 0 (no
/// blocks) when that is fewer than two.
pub(super) fn size(reserve: u64, limit: u64) -> u64 {
    let size = reserve.min(limit / 1000);
    if size < 2 { 0 } else { size }
}

/// The counter value up to which blocks are handed out: half the limit.
pub(super) fn ceiling(limit: u64) -> u64 {
    limit / 2
}

/// One thread's blocks, by counter key.
#[derive(Default)]
pub(super) struct Blocks {
    blocks: Mutex<HashMap<String, Block>>,
    ids: AtomicU64,
}

struct Block {
    /// The next position to hand out and the last one.
    next: u64,
    last: u64,
    id: u64,
}

impl Blocks {
    /// Takes `n` consecutive positions from `key`'s block; the last of them. `None`
    /// when there is no block or it has fewer than `n` left.
    pub(super) fn take(&self, key: &str, n: u64) -> Option<u64> {
        let mut blocks = self.lock();
        let block = blocks.get_mut(key)?;
        if block.last + 1 - block.next < n {
            return None;
        }
        block.next += n;
        let taken = block.next - 1;
        if block.next > block.last {
            blocks.remove(key);
        }
        Some(taken)
    }

    /// Whether `key` has a block (used up or not yet expired).
    pub(super) fn has(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Keeps positions `first..=last` of `key` for this thread; the block's id for
    /// [`Blocks::expire`]. Replaces a block the key may still have (callers ask for a
    /// new block only when [`Blocks::has`] says there is none).
    pub(super) fn insert(&self, key: &str, first: u64, last: u64) -> u64 {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let block = Block {
            next: first,
            last,
            id,
        };
        self.lock().insert(key.to_string(), block);
        id
    }

    /// Ends block `id` of `key` if it is still there; how many of its calls were not
    /// used (to be given back).
    pub(super) fn expire(&self, key: &str, id: u64) -> u64 {
        let mut blocks = self.lock();
        match blocks.get(key) {
            Some(block) if block.id == id => {
                let unused = block.last + 1 - block.next;
                blocks.remove(key);
                unused
            }
            _ => 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Block>> {
        self.blocks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_a_thousandth_of_the_limit_at_most() {
        assert_eq!(size(64, 1_000_000_000), 64);
        assert_eq!(size(64, 10_000), 10);
        assert_eq!(size(64, 1_999), 0, "a block of one saves nothing");
        assert_eq!(size(64, 1_000), 0);
        assert_eq!(size(0, 1_000_000), 0, "reserve = 0 turns blocks off");
        assert_eq!(ceiling(10_000), 5_000);
    }

    #[test]
    fn positions_come_out_in_order_until_the_block_is_used_up() {
        let blocks = Blocks::default();
        assert_eq!(blocks.take("k", 1), None);
        blocks.insert("k", 11, 15);
        assert_eq!(blocks.take("k", 1), Some(11));
        assert_eq!(blocks.take("k", 2), Some(13));
        assert_eq!(blocks.take("k", 3), None, "two left");
        assert_eq!(blocks.take("other", 1), None);
        assert_eq!(blocks.take("k", 2), Some(15));
        assert!(!blocks.has("k"), "a used-up block is gone");
    }

    #[test]
    fn expiry_reports_what_was_not_used_once() {
        let blocks = Blocks::default();
        let id = blocks.insert("k", 1, 64);
        blocks.take("k", 4);
        assert_eq!(blocks.expire("k", id + 1), 0, "another block's id");
        assert_eq!(blocks.expire("k", id), 60);
        assert_eq!(blocks.expire("k", id), 0, "already expired");
        assert!(!blocks.has("k"));

        let old = blocks.insert("k", 1, 2);
        blocks.take("k", 2);
        let new = blocks.insert("k", 3, 4);
        assert_eq!(blocks.expire("k", old), 0, "used up, then replaced");
        assert_eq!(blocks.expire("k", new), 2);
    }
}
