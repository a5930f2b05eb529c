//! TLS for Tandem's connections, through rustls with the ring provider:
//! PostgreSQL connections with libpq's `sslmode` meanings (the device's
//! `postgres://` remote and the gateway's pool share them), and the root
//! certificates an HTTPS client trusts.

mod error;
mod lenient;
mod roots;
mod sslmode;

pub use error::TlsError;
pub use roots::{https_client_config, provider};
pub use sslmode::{SslMode, TlsSettings};
