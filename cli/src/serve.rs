//! `tandem serve`: the HTTPS gateway devices sync through with only their
//! token (the `tandem-server` crate does the work).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tandem_server::config::{DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, DEFAULT_POOL_SIZE, DEFAULT_SHUTDOWN_GRACE};
use tandem_server::{Config, TlsFiles};

use crate::error::CliError;

#[derive(clap::Args)]
pub struct Args {
    /// The database, as the gateway's role (EXECUTE on the device functions
    /// only; docs/deploy.md): postgres://user@host/db[?sslmode=verify-full].
    #[arg(long, env = "TANDEM_DATABASE_URL", hide_env_values = true)]
    database: String,
    /// Address and port to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The gateway's certificate chain (PEM), leaf first.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (behind a proxy
    /// that ends TLS); without it, plain HTTP is for loopback only.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure_http: bool,
    /// Requests with a larger body, once decompressed, get 413.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// PostgreSQL connections in the pool.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_POOL_SIZE)]
    pool_size: usize,
    /// Seconds a shutdown (SIGTERM, SIGINT) waits for requests in flight.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs())]
    shutdown_grace: u64,
    /// Log JSON lines instead of text (RUST_LOG chooses what).
    #[arg(long)]
    log_json: bool,
}

pub fn run(args: &Args) -> Result<(), CliError> {
    tandem_server::logging::init(args.log_json);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
        _ => None,
    };
    let config = Config {
        database_url: args.database.clone(),
        listen: args.listen,
        tls,
        insecure_http: args.insecure_http,
        max_body_bytes: args.max_body_bytes,
        pool_size: args.pool_size,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        ..Config::new(args.database.clone())
    };
    Ok(tandem_server::run(config)?)
}
