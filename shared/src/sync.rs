//! Locking a `std::sync::Mutex` the one way chatd does.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering it if a thread panicked while holding it. Every
/// mutex in chatd guards plain data whose invariants hold between
/// statements (maps of subscribers, caches, handles), so the data a panic
/// left behind is still sound; refusing it would turn one panicked task into
/// a replica that fails every later request.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
