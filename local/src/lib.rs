//! Tandem's SQLite side: a local file that syncs, both ways, with a
//! PostgreSQL server running the `tandem` extension.
//!
//! The same `sync_*` functions as on the server are registered on the
//! connection, so an app or agent can sync with SQL
//! (`SELECT sync_run('postgres://...', 'crm', '{"params": {"tenant": 3}}')`)
//! or from Rust:
//!
//! ```no_run
//! use tandem_local::{Store, SyncOptions};
//!
//! # fn main() -> Result<(), tandem_local::LocalError> {
//! let store = Store::open_encrypted("crm.db", "correct horse battery staple")?;
//! let options = SyncOptions { params: Some([("tenant".into(), 3.into())].into()), ..SyncOptions::default() };
//! let report = store.sync("postgres://app@db.example.com/crm", "crm", &options)?;
//! println!("pushed {}, pulled {}, {} conflicts", report.pushed, report.pulled, report.conflicts.len());
//! // The file is plain SQLite: query it as usual; local writes are tracked.
//! store.connection().execute("UPDATE customers SET name = 'Ada' WHERE id = 7", [])?;
//! # Ok(())
//! # }
//! ```
//!
//! Local writes are tracked by plain SQL triggers, so any program writing the
//! file (even one that never loaded Tandem) has its changes synced.

pub mod agent;
pub mod apply;
pub mod changes;
mod checked;
pub mod error;
pub mod functions;
mod http_events;
pub mod http_remote;
mod keyless;
mod local_only;
mod lock;
mod log_reset;
pub mod meta;
mod moves;
mod not_stored;
mod own_keys;
pub mod provision;
pub mod record;
pub mod remote;
mod resync;
mod row_writer;
pub mod rows;
pub mod status;
pub mod store;
mod tx;
mod unfollowed;
mod values;
pub mod verify;
pub mod watch;

pub use agent::{Step, SyncOptions, SyncReport};
pub use error::{LocalError, RemoteError, Result};
pub use http_remote::HttpRemote;
pub use remote::{PostgresRemote, Remote};
pub use store::Store;
pub use watch::WatchStep;
