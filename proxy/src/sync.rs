//! Helpers for the few locks the proxy holds (never across an await).

use std::sync::{Mutex, MutexGuard};

/// Locks `m` even if a thread panicked while holding it: the proxy's critical
/// sections leave their data whole, and one panicked request must not take every
/// later one down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
