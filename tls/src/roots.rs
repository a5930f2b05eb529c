//! Root certificates: a PEM file the user names, and the system's.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::TlsError;

/// The crypto every Tandem TLS connection uses (ring: no C toolchain
/// beyond what the build already needs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Adds every certificate of a PEM file; a file without one is an error
/// naming it.
pub(crate) fn add_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let unreadable = |e: &dyn std::fmt::Display| TlsError::Config(format!("cannot read the root certificate {}: {e}", path.display()));
    let before = roots.len();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        roots.add(cert.map_err(|e| unreadable(&e))?).map_err(|e| unreadable(&e))?;
    }
    if roots.len() == before {
        return Err(unreadable(&"no certificate in the file"));
    }
    Ok(())
}

/// Adds the system's roots (those it can parse); returns how many.
pub(crate) fn add_system(roots: &mut RootCertStore) -> usize {
    let system = system_roots();
    roots.roots.extend(system.roots.iter().cloned());
    system.len()
}

/// The system's roots, read once per process: reading and decoding its PEM
/// files took a third of a device's CPU for a sync round through the
/// gateway, paid again by every connection. Roots the system gains later
/// are seen by the next process.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots
    })
}

/// An HTTPS client's TLS: the server's certificate must chain to `ca_cert`
/// (a PEM file) or to one of the system's roots, and name the host.
/// Offers HTTP/2 and HTTP/1.1.
pub fn https_client_config(ca_cert: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = ca_cert {
        add_file(&mut roots, path)?;
    }
    add_system(&mut roots);
    if roots.is_empty() {
        return Err(TlsError::Config("no root certificate to verify the server with: pass --ca-cert (option \"ca_cert\")".into()));
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
