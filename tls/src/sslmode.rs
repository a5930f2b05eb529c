//! libpq's `sslmode` meanings for a PostgreSQL URL: `disable` (plain),
//! `prefer` (TLS when the server offers it; the default, as in libpq),
//! `require` (TLS or fail), `verify-ca` (the server's certificate chains to
//! the root) and `verify-full` (and names the host). With a root
//! certificate at hand, `prefer` and `require` check the chain too, as
//! libpq does; without one they take any certificate. The root is
//! `--ca-cert`, else `sslrootcert` in the URL, else `PGSSLROOTCERT`, else
//! `~/.postgresql/root.crt`; the verifying modes fall back to the system's
//! roots. A URL without `sslmode` takes `PGSSLMODE` when it is set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, RootCertStore};

use crate::lenient::Lenient;
use crate::roots::{add_file, add_system, provider};
use crate::TlsError;

/// How a connection uses TLS (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// libpq's environment variables for TLS, read where the URL is silent.
#[derive(Debug, Default)]
struct LibpqTls {
    mode: Option<String>,
    root_cert: Option<PathBuf>,
}

/// What a URL asks of TLS, taken out of it: the `postgres` crate reads
/// neither the verifying modes nor a root certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// Splits `url` into the URL the `postgres` crate is given (without
    /// `sslmode` and `sslrootcert`) and the TLS settings; `ca_cert` (the
    /// CLI's `--ca-cert`) stands for `sslrootcert` and wins over it.
    pub fn from_url(url: &str, ca_cert: Option<&Path>) -> Result<(String, TlsSettings), TlsError> {
        Self::from_url_and(url, ca_cert, &LibpqTls::default())
    }

    /// [`from_url`](Self::from_url), with libpq's `PGSSLMODE` and
    /// `PGSSLROOTCERT` where the URL is silent: an operator used to libpq
    /// who sets them expects them to hold, and the URL's `prefer` would
    /// connect without checking the certificate (helper 74).
    pub fn from_url_or_env(url: &str, ca_cert: Option<&Path>) -> Result<(String, TlsSettings), TlsError> {
        let env = LibpqTls { mode: std::env::var("PGSSLMODE").ok(), root_cert: std::env::var_os("PGSSLROOTCERT").map(PathBuf::from) };
        Self::from_url_and(url, ca_cert, &env)
    }

    fn from_url_and(url: &str, ca_cert: Option<&Path>, env: &LibpqTls) -> Result<(String, TlsSettings), TlsError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    mode = Some(SslMode::parse(value).ok_or_else(|| {
                        TlsError::Config(format!("sslmode={value} is not one of disable, prefer, require, verify-ca, verify-full"))
                    })?)
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(percent_decoded(value)?)),
                _ => kept.push(pair),
            }
        }
        let root_cert = ca_cert.map(Path::to_path_buf).or(root_cert).or_else(|| env.root_cert.clone());
        let mode = match (mode, env.mode.as_deref().filter(|m| !m.is_empty())) {
            (Some(mode), _) => mode,
            (None, Some(value)) => SslMode::parse(value).ok_or_else(|| {
                TlsError::Config(format!("PGSSLMODE={value} is not one of disable, prefer, require, verify-ca, verify-full"))
            })?,
            (None, None) => SslMode::Prefer,
        };
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        Ok((rest, TlsSettings { mode, root_cert }))
    }

    /// The `postgres` crate's mode: TLS or not, and whether plain is allowed.
    pub fn postgres_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }

    /// The rustls configuration for these settings.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(format!("TLS setup: {e}")))?;
        let verify = match self.mode {
            SslMode::Disable => None,
            SslMode::Prefer | SslMode::Require => self.root_file().is_some().then_some(Check::Chain),
            SslMode::VerifyCa => Some(Check::Chain),
            SslMode::VerifyFull => Some(Check::ChainAndHost),
        };
        let algorithms = provider.signature_verification_algorithms;
        let config = match verify {
            None => builder.dangerous().with_custom_certificate_verifier(Arc::new(Lenient { chain: None, algorithms })),
            Some(check) => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::Config(format!("TLS setup: {e}")))?;
                match check {
                    Check::ChainAndHost => builder.with_webpki_verifier(webpki),
                    Check::Chain => {
                        builder.dangerous().with_custom_certificate_verifier(Arc::new(Lenient { chain: Some(webpki), algorithms }))
                    }
                }
            }
        };
        Ok(config.with_no_client_auth())
    }

    /// The root certificate file: given, or libpq's default if it exists.
    fn root_file(&self) -> Option<PathBuf> {
        let default = || std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".postgresql/root.crt")).filter(|p| p.exists());
        self.root_cert.clone().or_else(default)
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        match self.root_file() {
            Some(path) => add_file(&mut roots, &path)?,
            None => {
                if add_system(&mut roots) == 0 {
                    return Err(TlsError::Config(
                        "no root certificate to verify the server with: pass sslrootcert=<file> in the URL or --ca-cert".into(),
                    ));
                }
            }
        }
        Ok(roots)
    }
}

#[derive(Clone, Copy)]
enum Check {
    Chain,
    ChainAndHost,
}

/// A URL query value with `%XX` escapes undone (a path may hold spaces).
fn percent_decoded(value: &str) -> Result<String, TlsError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let byte = hex.ok_or_else(|| TlsError::Config(format!("bad %-escape in \"{value}\"")))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| TlsError::Config(format!("\"{value}\" is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_leave_the_url_and_default_to_prefer() {
        let (rest, tls) = TlsSettings::from_url("postgres://u@h:5/db?sslmode=verify-full&application_name=x", None).unwrap();
        assert_eq!(rest, "postgres://u@h:5/db?application_name=x");
        assert_eq!(tls, TlsSettings { mode: SslMode::VerifyFull, root_cert: None });
        let (rest, tls) = TlsSettings::from_url("postgres://u@h/db?sslrootcert=%2Ftmp%2Fmy%20ca.pem", None).unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(tls, TlsSettings { mode: SslMode::Prefer, root_cert: Some("/tmp/my ca.pem".into()) });
        let (_, tls) = TlsSettings::from_url("postgres://u@h/db?sslrootcert=a.pem", Some(Path::new("b.pem"))).unwrap();
        assert_eq!(tls.root_cert, Some(PathBuf::from("b.pem")), "--ca-cert wins");
        let error = TlsSettings::from_url("postgres://u@h/db?sslmode=allow", None).unwrap_err().to_string();
        assert!(error.contains("verify-full"), "{error}");
    }

    #[test]
    fn libpqs_environment_holds_where_the_url_is_silent() {
        let env = LibpqTls { mode: Some("verify-full".into()), root_cert: Some("env.pem".into()) };
        let (_, tls) = TlsSettings::from_url_and("postgres://u@h/db", None, &env).unwrap();
        assert_eq!(tls, TlsSettings { mode: SslMode::VerifyFull, root_cert: Some("env.pem".into()) });
        let (_, tls) = TlsSettings::from_url_and("postgres://u@h/db?sslmode=prefer&sslrootcert=url.pem", None, &env).unwrap();
        assert_eq!(tls, TlsSettings { mode: SslMode::Prefer, root_cert: Some("url.pem".into()) }, "the URL wins");
        let (_, tls) = TlsSettings::from_url_and("postgres://u@h/db", Some(Path::new("cli.pem")), &env).unwrap();
        assert_eq!(tls.root_cert, Some(PathBuf::from("cli.pem")), "--ca-cert wins");
        let bad = LibpqTls { mode: Some("allow".into()), root_cert: None };
        let error = TlsSettings::from_url_and("postgres://u@h/db", None, &bad).unwrap_err().to_string();
        assert!(error.contains("PGSSLMODE=allow"), "{error}");
    }

    #[test]
    fn a_verifying_mode_without_the_root_file_says_which_file() {
        let (_, tls) = TlsSettings::from_url("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem", None).unwrap();
        let error = tls.client_config().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }
}
