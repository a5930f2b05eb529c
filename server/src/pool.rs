//! The gateway's PostgreSQL connections: a pool for requests, with TLS as
//! the URL's `sslmode` says (the same meanings as a device's `postgres://`
//! remote), and the settings the dedicated `LISTEN` connection reuses.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tandem_core::dsn::redacted;
use tandem_tls::{SslMode, TlsSettings};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::ServeError;

/// How to reach the database: the parsed URL and its TLS (`None`: plain).
#[derive(Clone)]
pub struct Settings {
    pub config: tokio_postgres::Config,
    pub tls: Option<MakeRustlsConnect>,
    /// The URL with its password hidden, for messages.
    pub shown: String,
}

/// Reads `url`: its `sslmode` and root, a 10 s connect timeout unless it
/// sets one, and `PGPASSWORD` when it has no password.
pub fn settings(url: &str) -> Result<Settings, ServeError> {
    let shown = redacted(url);
    let failed = |reason: String| ServeError::Database { url: shown.clone(), reason };
    let (rest, tls) = TlsSettings::from_url_or_env(url, None).map_err(|e| failed(e.to_string()))?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| failed(format!("not a PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("tandem-gateway");
    if config.get_password().is_none() {
        if let Ok(password) = std::env::var("PGPASSWORD") {
            config.password(password);
        }
    }
    config.ssl_mode(tls.postgres_mode());
    let tls = match tls.mode {
        SslMode::Disable => None,
        _ => Some(MakeRustlsConnect::new(tls.client_config().map_err(|e| failed(e.to_string()))?)),
    };
    Ok(Settings { config, tls, shown })
}

/// A pool of at most `size` connections; none is opened yet.
pub fn build(settings: &Settings, size: usize) -> Result<Pool, ServeError> {
    let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = match &settings.tls {
        None => Manager::from_config(settings.config.clone(), NoTls, recycling),
        Some(connector) => Manager::from_config(settings.config.clone(), connector.clone(), recycling),
    };
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(15)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| ServeError::Database { url: settings.shown.clone(), reason: e.to_string() })
}
