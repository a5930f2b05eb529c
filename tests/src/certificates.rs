//! Certificates made for a test: a CA of its own and a server certificate
//! it signed for localhost and 127.0.0.1, so TLS is checked for real
//! (against PostgreSQL or the gateway) and another CA is refused.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// The CA's certificate, and the server's certificate and key, in PEM.
pub struct Pems {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// A CA named `name` and a server certificate it signed.
pub fn make(name: &str) -> Pems {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, "localhost");
    let server_cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pems { ca: ca_cert.pem(), cert: server_cert.pem(), key: key.serialize_pem() }
}

/// [`make`]'s PEMs in files of `dir`.
pub struct Files {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn in_files(dir: &Path, name: &str) -> Files {
    let pems = make(name);
    let files = Files {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&files.ca, pems.ca).unwrap();
    std::fs::write(&files.cert, pems.cert).unwrap();
    std::fs::write(&files.key, pems.key).unwrap();
    files
}

/// A certificate and key no client should take from a server, in PEM
/// files of `dir`: `"ca"`, a self-signed CA certificate (what a bare
/// `openssl req -x509` makes), or `"expired"`, a leaf that expired in 2020.
pub fn unusable_in_files(dir: &Path, kind: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    match kind {
        "ca" => params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
        "expired" => {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        other => panic!("no unusable certificate of kind {other}"),
    }
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.join(format!("{kind}-cert.pem")), dir.join(format!("{kind}-key.pem")));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}
