//! How the process asks the system allocator for memory.
//!
//! glibc's malloc gives each thread that contends for it an arena of its
//! own (up to eight per core), and memory freed in one arena is not reused
//! by another. inflight allocates on one thread (a feed's reader, the
//! API) and frees on another (a run's task, housekeeping) all the time, so
//! freed memory piles up in arenas that do not need it. One arena keeps it
//! in one place: at 10 000 sessions × 20 transcripts the load harness
//! peaks 11 % lower and ingests no slower on two cores; `inflight serve`
//! on the same feed peaked the same either way (docs/BENCHMARKS.md,
//! "Memory"). mimalloc did about as well as one arena at the cost of a C
//! dependency.

/// Limits glibc's malloc to one arena, unless `MALLOC_ARENA_MAX` in the
/// environment says otherwise. Call first thing in `main`, before any
/// thread starts. Elsewhere (musl, other systems) it does nothing.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets a tunable of the allocator, and it is
        // called before any other thread exists. Refused, it changes
        // nothing, so its answer needs no check.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
