//! The `portcullis` binary: everything is in the library; see `cli`. The binary picks
//! the memory allocator.

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: ~14 % less gateway CPU per call at saturation
/// (docs/performance.md, "Allocator and LTO").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    portcullis::run()
}

/// Indices into mimalloc's `mi_option_e` (v3, `include/mimalloc.h`); the bindings name
/// neither. The test below checks them against their neighbours' defaults.
const OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's defaults commit its arenas eagerly and keep freed memory for a second:
/// the idle gateway then holds ~57 MB instead of ~35 (compiling the policies at
/// start-up frees a lot). Commit on use and return freed memory at once, for the same
/// throughput (docs/performance.md). These are defaults: an operator's `MIMALLOC_*` variable still
/// wins. mimalloc reads its options (and the environment) in a constructor of its own,
/// before `main`; this one runs before it (the priority puts it ahead of every
/// constructor without one, as Rust's own `std` does to keep `argv`). It does not
/// allocate: it writes two entries of mimalloc's option table.
extern "C" fn tune_allocator() {
    for option in [OPTION_ARENA_EAGER_COMMIT, OPTION_PURGE_DELAY] {
        // SAFETY: writes an option's default; nothing else runs this early.
        unsafe { libmimalloc_sys::mi_option_set_default(option, 0) };
    }
}

#[used]
#[unsafe(link_section = ".init_array.00101")]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocator_options_are_set_before_mimalloc_reads_them() {
        let get = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        // This test binary has the constructor too: unless the environment says
        // otherwise, both options start at 0 (mimalloc's own defaults: 2 and 1000).
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(get(OPTION_ARENA_EAGER_COMMIT), 0);
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(OPTION_PURGE_DELAY), 0);
        }
        // The enum is where the indices say: the entries around them hold their own
        // defaults (deprecated_eager_commit, purge_decommits, eager_commit_delay: 1).
        assert_eq!((get(3), get(5), get(14)), (1, 1, 1));
    }
}
