//! The one way chatd takes a `std::sync::Mutex`.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering the guard if a thread panicked while holding it.
///
/// Recovering is right for chatd's mutexes: each guards a map or a small
/// state whose every update is a single step (insert, remove, replace), so a
/// panic elsewhere cannot leave it half-written, and refusing the lock
/// forever would turn one panicked task into a replica that can no longer
/// route notices, follow peers or authenticate anyone. A mutex whose data
/// *can* be left inconsistent must not use this.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_locks() {
        let mutex = std::sync::Arc::new(Mutex::new(1));
        let held = mutex.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("poison it");
        })
        .join();
        assert!(panicked.is_err());
        assert!(mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 2);
    }
}
