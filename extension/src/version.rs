//! The library and the database's extension must be of one version. The
//! library is the server's, shared by every database, and `make install`
//! replaces it at once; each database's tables and functions change only
//! with its `ALTER EXTENSION tandem UPDATE`; and a session keeps the
//! library it loaded first. Wherever they differ, the library would read
//! and write tables of another shape, so every call refuses, saying what
//! to run. Looked up at every call (one catalog row): a pooled session
//! outlives an update.

use tandem_core::{Error, Result};

use crate::spi::{self, Spi};

/// Refuses a call in a database whose extension is not this library's
/// version.
pub fn require_matching(spi: &mut Spi<'_>) -> Result<()> {
    let library = env!("CARGO_PKG_VERSION");
    let installed = spi::one::<String>(spi, "SELECT e.extversion::text FROM pg_catalog.pg_extension e WHERE e.extname = 'tandem'", &[])?
        .unwrap_or_default();
    if installed != library {
        return Err(Error::ExtensionVersion { installed, library: library.to_string() });
    }
    Ok(())
}
