//! glibc allocator settings for the `mdem` process (no-ops elsewhere).
//!
//! glibc raises its mmap threshold each time a mapped buffer is freed, so that later
//! buffers of that size come from the heap or a per-thread arena instead, where a freed
//! buffer stays part of the resident set. A fit allocates and frees $n\times K$
//! responsibility buffers on the worker threads every E-step, so the resident set crept
//! up by a few of them (see [`for_in_memory`]).

/// Buffers of 1 MiB or more are mapped and unmapped whole (`M_MMAP_THRESHOLD` fixed at
/// 1 MiB, glibc's default start, instead of rising after each free).
///
/// Measured on `moe1m.csv` (10⁶ rows, 20 features, gated linear, $K = 2$, a whole fit):
/// peak RSS 277–286 MB with glibc's defaults, 245–246 MB with this setting; at
/// $n = 20\,000$ the wall time is unchanged (0.108–0.124 s against 0.107–0.115 s).
/// Called by `main` before any other thread exists.
pub fn for_in_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets an allocator parameter; M_MMAP_THRESHOLD with a
    // positive value is a documented setting, and no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// For a streamed fit, whose passes allocate and free block- and chunk-sized buffers on
/// the reading and parsing threads, never per-row ones:
///
/// * one arena (`M_ARENA_MAX` = 1) instead of one per thread, where freed buffers stayed
///   parked in each thread's arena;
/// * buffers of a parse block or more (`M_MMAP_THRESHOLD` = 4 MiB, fixed) mapped and
///   unmapped whole, so they cannot fragment the heap.
///
/// Measured on a two-line mixture file (2 columns, two runs each): peak RSS 103–115 MB at
/// 2·10⁶ rows and 127–142 MB at 8·10⁶ with glibc's defaults (creeping up with the rows);
/// 91–93 MB and 96 MB with these settings, which cost 8–20 % more wall time (3.3–3.7 s
/// against 2.5–3.1 s at 2·10⁶ rows, 12.4–12.8 s against 11.3–11.8 s at 8·10⁶). Called
/// before the first parallel work creates the worker threads.
pub fn for_streaming() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: as in `for_in_memory`; no other thread of ours is allocating yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}
