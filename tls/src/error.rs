//! Why a TLS setup could not be made: a setting or a certificate file to fix.

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A URL setting, a certificate file or the system's roots are wrong or
    /// missing: the message names which, and what to pass instead.
    #[error("{0}")]
    Config(String),
}
