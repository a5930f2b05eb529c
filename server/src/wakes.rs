//! Fan-out of "a scope saw a commit" from the one `LISTEN` connection to
//! every open event stream. Only the scope's name travels here, and each
//! stream keeps what concerns its own scope.

use std::sync::Arc;

use tokio::sync::broadcast;

/// What the `LISTEN` connection heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A transaction that touched this scope's tables committed.
    Scope(Arc<str>),
    /// The connection was (re)established: notifications may have been
    /// missed meanwhile, so every stream is woken.
    All,
}

impl Wake {
    /// Whether a stream watching `scope` should tell its device.
    pub fn concerns(&self, scope: &str) -> bool {
        match self {
            Wake::Scope(name) => &**name == scope,
            Wake::All => true,
        }
    }
}

/// Wakes waiting for streams; a stream that falls this far behind is
/// woken anyway (it lost track of which scopes were named).
const BACKLOG: usize = 1024;

/// The sending end, shared by the listener and the event handler.
#[derive(Clone)]
pub struct Wakes {
    sender: broadcast::Sender<Wake>,
}

impl Default for Wakes {
    fn default() -> Self {
        Wakes { sender: broadcast::channel(BACKLOG).0 }
    }
}

impl Wakes {
    /// Tells every open stream; nobody listening is fine.
    pub fn send(&self, wake: Wake) {
        let _ = self.sender.send(wake);
    }

    /// A new stream's receiver: it hears what is sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Wake> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_concerns_its_scope_or_everyone() {
        assert!(Wake::Scope("crm".into()).concerns("crm"));
        assert!(!Wake::Scope("crm".into()).concerns("crm2"));
        assert!(!Wake::Scope("crm".into()).concerns("other"));
        assert!(Wake::All.concerns("anything"));
    }
}
