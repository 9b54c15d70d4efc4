//! [`ServerHandle`]: what a running server reports about its connections.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
};

/// A cheap, cloneable view of a server's connections, from [`Serve::handle`](super::Serve::handle).
///
/// Reading it costs two relaxed atomic loads; it stays valid (reporting the final figures)
/// after the server has stopped.
#[derive(Clone, Debug, Default)]
pub struct ServerHandle {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicUsize,
    accepted: AtomicU64,
}

impl ServerHandle {
    /// Connections accepted and not yet closed. Never more than
    /// [`Server::max_connections`](super::Server::max_connections): a connection counts
    /// from when it is accepted until its socket is closed.
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Relaxed)
    }

    /// Connections accepted since the server started.
    pub fn accepted_connections(&self) -> u64 {
        self.counters.accepted.load(Relaxed)
    }

    /// Counts an accepted connection until the returned guard is dropped.
    pub(super) fn opened(&self) -> OpenGuard {
        self.counters.accepted.fetch_add(1, Relaxed);
        self.counters.open.fetch_add(1, Relaxed);
        OpenGuard {
            counters: Arc::clone(&self.counters),
        }
    }
}

/// Uncounts its connection when dropped.
#[derive(Debug)]
pub(super) struct OpenGuard {
    counters: Arc<Counters>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_open_and_accepted_connections() {
        let handle = ServerHandle::default();
        let first = handle.opened();
        let second = handle.clone().opened();
        assert_eq!(handle.open_connections(), 2);
        drop(first);
        assert_eq!(handle.open_connections(), 1);
        drop(second);
        assert_eq!(handle.open_connections(), 0);
        assert_eq!(handle.accepted_connections(), 2);
    }
}
