//! Gives the heap's free pages back to the system after bursts of work.
//!
//! The operator runs on one thread, so glibc's malloc serves it from one heap, and returns memory
//! to the system on its own only from the top of that heap. A start with 1,000 releases in place
//! decodes the initial lists, a page of full objects at a time, while the compact cache entries
//! are allocated in between; the freed pages between them stayed resident (`make bench`: 34 MiB
//! after such a start, where the caches hold about 13). `malloc_trim` hands every whole free page
//! back. It runs a few seconds after reconciles, so a quiet operator does nothing at all.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

const PERIOD: Duration = Duration::from_secs(5);

/// Runs forever: every few seconds, if reconciles ran since the last look, trims the heap.
pub async fn trim_after_work(reconciles: Counter) {
    let mut seen = reconciles.get();
    loop {
        tokio::time::sleep(PERIOD).await;
        let now = reconciles.get();
        if now != seen {
            seen = now;
            trim();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointer from us: it walks glibc's own free lists under the
    // allocator's lock and madvises whole free pages away, which is safe at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's, or a future global allocator) manage their own free memory.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
