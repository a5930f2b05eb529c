//! The gateway's PostgreSQL connections: a pool, with TLS as the URL's
//! `sslmode` says (the same meanings as a device's `postgres://` remote).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tandem_core::dsn::redacted;
use tandem_tls::{SslMode, TlsSettings};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::ServeError;

/// A pool of at most `size` connections to `url`; none is opened yet.
pub fn build(url: &str, size: usize) -> Result<Pool, ServeError> {
    let shown = redacted(url);
    let failed = |reason: String| ServeError::Database { url: shown.clone(), reason };
    let (rest, tls) = TlsSettings::from_url(url, None).map_err(|e| failed(e.to_string()))?;
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
    let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = match tls.mode {
        SslMode::Disable => Manager::from_config(config, NoTls, recycling),
        _ => {
            let connector = MakeRustlsConnect::new(tls.client_config().map_err(|e| failed(e.to_string()))?);
            Manager::from_config(config, connector, recycling)
        }
    };
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(15)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| failed(e.to_string()))
}
