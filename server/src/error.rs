//! Why a gateway could not start or stopped, each saying what to fix.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve plain HTTP on {listen}, which is not a loopback address: devices' tokens would cross the network \
         in clear. Pass --tls-cert and --tls-key, or --insecure-http when a proxy in front ends TLS"
    )]
    PlainHttpRefused { listen: SocketAddr },

    #[error("cannot use the TLS certificate or key {path}: {reason}")]
    Certificate { path: String, reason: String },

    #[error("cannot use PostgreSQL at {url}: {reason}")]
    Database { url: String, reason: String },

    #[error("cannot listen on {listen}: {reason} (is another process using it?)")]
    Bind { listen: SocketAddr, reason: String },

    #[error("the gateway stopped: {0}")]
    Serve(String),

    #[error("{0}")]
    Invalid(String),
}
