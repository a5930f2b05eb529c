//! Tandem's shared core: everything the PostgreSQL extension and the SQLite
//! side must agree on, with no database dependency. Changesets, schemas and
//! setups (serde), the value model, conflict rules, watermarks, identifier
//! quoting, and the SQL both sides run, generated per dialect; and how a
//! device and the gateway wait before reconnecting.

pub mod apply_result;
pub mod backoff;
pub mod changeset;
pub mod conflict;
pub mod dsn;
pub mod error;
pub mod ident;
pub mod identity;
pub mod json;
pub mod migration;
pub mod options;
pub mod schema;
pub mod setup;
pub mod sql;
pub mod types;
pub mod upload;
pub mod validate;
pub mod verify;
pub mod watermark;

pub use error::{Error, Rejection, RejectionKind, Result};
