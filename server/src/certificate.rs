//! The gateway's own certificate: a PEM chain and key, offered with HTTP/2
//! and HTTP/1.1.

use std::path::Path;
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsFiles;
use crate::error::ServeError;

fn unusable(path: &Path, reason: impl std::fmt::Display) -> ServeError {
    ServeError::Certificate { path: path.display().to_string(), reason: reason.to_string() }
}

/// The TLS setup for `files`; an unreadable file or a key that does not
/// match the certificate is an error naming the file.
pub fn load(files: &TlsFiles) -> Result<RustlsConfig, ServeError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| unusable(&files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(&files.cert, e))?;
    if chain.is_empty() {
        return Err(unusable(&files.cert, "no certificate in the file (PEM, leaf first)"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| unusable(&files.key, e))?;
    let mut config = ServerConfig::builder_with_provider(tandem_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(&files.cert, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| unusable(&files.key, format!("{e} (is it the certificate's key?)")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}
