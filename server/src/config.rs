//! What a gateway is told at start, and the checks that refuse a setup that
//! would put tokens on the network in clear.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ServeError;

/// How often an open event stream's token is checked again by default.
pub const DEFAULT_TOKEN_RECHECK: Duration = Duration::from_secs(60);

/// Where the gateway listens by default: this host only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// The largest request body by default, after decompression: twice the
/// batch a device uploads by default (64 MB), so default batches always fit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * tandem_core::options::DEFAULT_MAX_BYTES as usize;

/// How many PostgreSQL connections the pool holds by default.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long a shutdown waits for requests in flight by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// The certificate chain and private key the gateway presents (PEM files).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A gateway's settings (`tandem serve`'s flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// `postgres://` URL of the database, as the gateway's role; `sslmode`
    /// and `sslrootcert` as a device's URL takes them.
    pub database_url: String,
    pub listen: SocketAddr,
    /// `None` serves plain HTTP, which [`Config::check`] allows only on a
    /// loopback address or with `insecure_http`.
    pub tls: Option<TlsFiles>,
    /// Plain HTTP on any address: for a gateway behind a proxy that ends TLS.
    pub insecure_http: bool,
    /// Requests with a larger body (after decompression) get 413.
    pub max_body_bytes: usize,
    pub pool_size: usize,
    /// Requests still running this long after a shutdown began are cut.
    pub shutdown_grace: Duration,
    /// How often an open event stream checks its token again, ending the
    /// stream once it is revoked.
    pub token_recheck: Duration,
    /// How long a connection may take to send a request's headers: a
    /// client that opens connections and sends nothing holds none for long.
    pub header_read_timeout: Duration,
}

impl Config {
    /// A loopback gateway in plain HTTP for `database_url`, with the defaults.
    pub fn new(database_url: impl Into<String>) -> Config {
        Config {
            database_url: database_url.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: None,
            insecure_http: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            pool_size: DEFAULT_POOL_SIZE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            token_recheck: DEFAULT_TOKEN_RECHECK,
            header_read_timeout: Duration::from_secs(10),
        }
    }

    /// Refuses plain HTTP where the network could read it: on an address
    /// other than loopback without `insecure_http`.
    pub fn check(&self) -> Result<(), ServeError> {
        if self.tls.is_none() && !self.insecure_http && !self.listen.ip().is_loopback() {
            return Err(ServeError::PlainHttpRefused { listen: self.listen });
        }
        if self.max_body_bytes == 0 {
            return Err(ServeError::Invalid("--max-body-bytes must be at least 1".into()));
        }
        if self.token_recheck.is_zero() {
            return Err(ServeError::Invalid("the token recheck interval must be more than zero".into()));
        }
        if self.pool_size == 0 {
            return Err(ServeError::Invalid("--pool-size must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_or_asked_for() {
        let mut config = Config::new("postgres://gateway@db/app");
        assert!(config.check().is_ok(), "127.0.0.1");
        config.listen = "[::1]:8080".parse().unwrap();
        assert!(config.check().is_ok(), "::1");
        config.listen = "0.0.0.0:8443".parse().unwrap();
        let error = config.check().unwrap_err().to_string();
        assert!(error.contains("0.0.0.0:8443") && error.contains("--tls-cert") && error.contains("--insecure-http"), "{error}");
        config.insecure_http = true;
        assert!(config.check().is_ok());
        config.insecure_http = false;
        config.tls = Some(TlsFiles { cert: "c.pem".into(), key: "k.pem".into() });
        assert!(config.check().is_ok());
    }
}
