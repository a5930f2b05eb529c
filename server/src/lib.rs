//! Tandem's HTTPS gateway (`tandem serve`): devices sync through it holding
//! only their token, never a database login. It is a relay, not a second
//! sync engine: each request becomes one call of the `sync_*` function a
//! `postgres://` remote would call, with the bearer token in its options,
//! and the extension decides what the token may see and write. The
//! protocol (endpoints, statuses, compression, limits) is in
//! `docs/design.md`, under "The HTTPS gateway".

mod api_error;
mod auth;
mod certificate;
pub mod config;
mod device_options;
mod error;
mod gateway;
mod handlers;
mod health;
pub mod logging;
mod metrics;
mod pool;
mod relay;
mod routes;

pub use api_error::status_for;
pub use config::{Config, TlsFiles};
pub use error::ServeError;
pub use gateway::{run, Gateway, Running, Stopper};
