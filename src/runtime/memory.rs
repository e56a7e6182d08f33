//! The process's memory: mimalloc (the binary's global allocator) and the C library's
//! allocator (librdkafka's).

/// Turns transparent huge pages off for the process (first thing in `main`), as mimalloc's `MIMALLOC_ALLOW_THP=0`
/// does (which, when set, is left to decide). mimalloc asks for huge pages for its arenas;
/// measured side by side (the allocator table of `docs/runtime.md`), they made resident memory about a
/// fifth larger while ingesting and half again as large after a restore, for no CPU saved.
pub fn keep_heap_pages_small() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes no pointers; it only sets a flag of the process.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

/// Hands memory freed after a restore back to the system. A restore decodes every changelog
/// record into short-lived values while the engine's tables grow; without this the resident
/// size after a restore stays well above what the state needs. Both allocators: mimalloc
/// holds the connector's own memory (the binary's global allocator), the C library's
/// allocator librdkafka's.
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps of this thread and the abandoned
    // ones; it takes no pointers.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
