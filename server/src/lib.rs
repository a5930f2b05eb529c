//! Tandem's HTTPS gateway (`tandem serve`): devices sync through it holding
//! only their token, never a database login. It is a relay, not a second
//! sync engine: each request becomes one call of the `sync_*` function a
//! `postgres://` remote would call, with the bearer token in its options,
//! and the extension decides what the token may see and write. Devices
//! that watch hold an event stream, woken by one `LISTEN` connection
//! when their scope sees a commit. The
//! protocol (endpoints, statuses, compression, limits) is in
//! `docs/design.md`, under "The HTTPS gateway".

mod api_error;
mod auth;
mod certificate;
pub mod config;
mod device_options;
mod error;
mod events;
mod gateway;
mod handlers;
mod health;
mod listener;
pub mod logging;
mod metrics;
mod pool;
mod relay;
mod routes;
mod socket;
mod wakes;

pub use api_error::status_for;
pub use config::{Config, TlsFiles};
pub use error::ServeError;
pub use gateway::{run, Gateway, Running, Stopper};
