//! The malloc arenas of a worker process.
//!
//! glibc gives each thread that allocates an arena of its own, up to eight per core, and an
//! arena keeps the pages its thread's garbage touched. A worker process has a dozen threads that
//! allocate (the host's work threads, which decode deliveries into host strings, and the
//! engine's runtime and I/O threads); each host thread that ever took a burst of work kept
//! 0.3-1.6 MiB in its arena, so a Ruby worker peaked 2.6-4.8 MiB above a Bunny one, whose
//! threads hardly allocate outside the main arena. Two arenas brought it below Bunny's (with or
//! without the same setting for Bunny) at the same rates, in Ruby and in Python
//! (docs/performance.md): the host's threads mostly take turns under the GVL/GIL, so they seldom
//! contend for an arena.
//!
//! This is the `MALLOC_ARENA_MAX=2` often recommended for Ruby servers, applied by the engine:
//! a user who sets `MALLOC_ARENA_MAX` (or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`) keeps
//! their own choice. It applies to arenas created from then on, so it is set when an engine is
//! created, before the work threads start; glibc fixes its limit once a ninth arena was needed,
//! so a process that already ran more than eight allocating threads keeps its arenas.

use std::ffi::OsStr;
use std::sync::Once;

/// The arenas of a process that runs an engine.
pub const WORKER_ARENAS: i32 = 2;

/// Caps this process's malloc arenas at [`WORKER_ARENAS`], once, unless the user chose a number
/// (or the C library is not glibc).
pub(crate) fn cap_for_workers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let arena_max = std::env::var_os("MALLOC_ARENA_MAX");
        let tunables = std::env::var_os("GLIBC_TUNABLES");
        if user_chose(arena_max.as_deref(), tunables.as_deref()) {
            log::debug!("malloc arenas: leaving MALLOC_ARENA_MAX / GLIBC_TUNABLES as set");
        } else if set_arena_max(WORKER_ARENAS) {
            log::debug!("malloc arenas capped at {WORKER_ARENAS} (MALLOC_ARENA_MAX overrides)");
        }
    })
}

/// Whether the environment already sets glibc's arena limit.
fn user_chose(arena_max: Option<&OsStr>, tunables: Option<&OsStr>) -> bool {
    arena_max.is_some()
        || tunables.is_some_and(|t| {
            t.to_string_lossy()
                .split(':')
                .any(|kv| kv.split('=').next() == Some("glibc.malloc.arena_max"))
        })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(n: i32) -> bool {
    // SAFETY: mallopt only sets a parameter of the allocator; glibc takes its own lock.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::user_chose;
    use std::ffi::OsStr;

    #[test]
    fn the_users_own_setting_wins() {
        let os = |s| Some(OsStr::new(s));
        assert!(!user_chose(None, None));
        assert!(user_chose(os("8"), None));
        assert!(user_chose(None, os("glibc.malloc.arena_max=4")));
        assert!(user_chose(
            None,
            os("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4")
        ));
        assert!(!user_chose(None, os("glibc.malloc.arena_test=4")));
        assert!(!user_chose(None, os("glibc.malloc.arena_max_x=4")));
    }
}
