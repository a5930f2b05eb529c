//! The gateway's own certificate: a PEM chain and key, offered with HTTP/2
//! and HTTP/1.1.

use std::path::Path;
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
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
    let Some(leaf) = chain.first() else {
        return Err(unusable(&files.cert, "no certificate in the file (PEM, leaf first)"));
    };
    refuse_what_clients_refuse(leaf).map_err(|reason| unusable(&files.cert, reason))?;
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

/// The leaf's own faults that make every client refuse the handshake (a
/// CA certificate offered as the server's, an expired one, one not for
/// servers), said once at start instead of as each device's TLS error.
/// Whom it chains to is the clients' to check: no root is given here, so
/// "unknown issuer" is what a good leaf gets.
fn refuse_what_clients_refuse(leaf: &CertificateDer<'_>) -> Result<(), String> {
    const SEE: &str = "see docs/deploy.md, \"The HTTPS gateway\"";
    let parsed = webpki::EndEntityCert::try_from(leaf).map_err(|e| match e {
        webpki::Error::UnsupportedCertVersion => {
            format!("the first certificate is not X.509 v3, the only version clients take: make it with extensions; {SEE}")
        }
        other => format!("the first certificate cannot be read ({other}); {SEE}"),
    })?;
    let checked = parsed.verify_for_usage(&[], &[], &[], UnixTime::now(), webpki::KeyUsage::server_auth(), None, None);
    match checked {
        Err(webpki::Error::CaUsedAsEndEntity) => Err(format!(
            "its first certificate is a CA's (basicConstraints CA:TRUE, as a bare `openssl req -x509` makes), which Tandem's \
             clients refuse as a server's: put the server's own certificate first (leaf, then intermediates), a leaf (CA:FALSE) \
             signed by the CA or a self-signed one made CA:FALSE; {SEE}"
        )),
        Err(webpki::Error::CertExpired { not_after, .. }) => {
            Err(format!("it expired on {}, and every client refuses it: renew it; {SEE}", utc(not_after)))
        }
        Err(webpki::Error::CertNotValidYet { not_before, .. }) => Err(format!(
            "it is not valid before {} (is this host's clock right?), and clients refuse it until then; {SEE}",
            utc(not_before)
        )),
        Err(webpki::Error::RequiredEkuNotFoundContext(_)) => {
            Err(format!("its extended key usage leaves out serverAuth, and clients refuse it: make one for TLS servers; {SEE}"))
        }
        _ => Ok(()),
    }
}

fn utc(at: UnixTime) -> String {
    i64::try_from(at.as_secs())
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{} s after 1970", at.as_secs()))
}
