//! The settings a scope's owner's code runs with during a sync call: what
//! a new session of the owner would start with, never what the caller's
//! session chose (design.md, "Security"). A device's session can set
//! anything of its own (`SET`, its connection's options, its role's own
//! `ALTER ROLE ... SET`); an audit trigger reading `app.user`, or a
//! `DEFAULT current_date`, must not compute with that.

use tandem_core::Result;

use crate::guc;
use crate::spi::{self, Spi, TEXT_SETTINGS};

/// Settings besides [`TEXT_SETTINGS`] that change what code computes.
const COMPUTING_SETTINGS: [&str; 4] = ["default_text_search_config", "transform_null_equals", "xmlbinary", "quote_all_identifiers"];

/// Whether `name` is a setting the owner's code computes with, besides
/// [`TEXT_SETTINGS`]: a custom one (`app.user`, `plpgsql.extra_errors`)
/// or one of [`COMPUTING_SETTINGS`].
fn computes_with(name: &str) -> bool {
    name.contains('.') || COMPUTING_SETTINGS.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// What the owner's code runs with, read before it runs (with the
/// extension's rights: the configuration files are a superuser's to read).
pub struct OwnerSettings {
    /// Each of [`TEXT_SETTINGS`], for the statements that write the
    /// tables (see `spi::with_owners_text_settings`).
    pub text: Vec<(&'static str, String)>,
    /// Settings the owner's code computes with ([`computes_with`]), set for
    /// the length of its code: what the owner's and the database's `ALTER
    /// ... SET` give them, and, for those the caller's role or connection
    /// set as its session started, the configured value (empty for a
    /// custom setting nothing configures).
    others: Vec<(String, String)>,
}

impl OwnerSettings {
    /// `configured`: the owner's and the database's `ALTER ... SET` entries
    /// (`name=value`), the owner's own first.
    pub fn read(spi: &mut Spi<'_>, configured: &[String]) -> Result<OwnerSettings> {
        let mut files = Lazy::default();
        let mut text = Vec::with_capacity(TEXT_SETTINGS.len());
        for &(name, ours) in &TEXT_SETTINGS {
            let value = match entry(configured, name) {
                Some(value) => value,
                None => match guc::configured(name)? {
                    Some(value) => value,
                    None => entry(files.get(spi, configuration_files)?, name).unwrap_or_else(|| ours.to_string()),
                },
            };
            text.push((name, value));
        }
        let mut others: Vec<(String, String)> = Vec::new();
        for (name, value) in configured.iter().filter_map(|entry| entry.split_once('=')) {
            let name = name.trim().to_ascii_lowercase();
            if computes_with(&name) && !others.iter().any(|(n, _)| *n == name) {
                others.push((name, value.to_string()));
            }
        }
        let shadowed: Vec<String> =
            guc::set_at_start_by_caller().into_iter().filter(|n| computes_with(n) && !others.iter().any(|(o, _)| o == n)).collect();
        if !shadowed.is_empty() {
            let defaults = built_in(spi, &shadowed)?;
            for name in shadowed {
                let value = entry(files.get(spi, configuration_files)?, &name).or_else(|| entry(&defaults, &name)).unwrap_or_default();
                others.push((name, value));
            }
        }
        Ok(OwnerSettings { text, others })
    }

    /// Starts the owner's code from these settings, inside its GUC nest
    /// level: what the caller's session changed goes back to what the
    /// session started with (but what sync pins itself), then the owner's
    /// own. Set with the extension's rights, as PostgreSQL applies a
    /// superuser's `ALTER ROLE ... SET` at the owner's session start; one
    /// PostgreSQL refuses is left as it is, as there.
    pub fn start(&self) -> Result<()> {
        guc::reset_session_changes(spi::pinned_by_call)?;
        for (name, value) in &self.others {
            guc::set_local_if_valid(name, value)?;
        }
        Ok(())
    }
}

/// The value `entries` (`name=value`, first wins) give `name`.
fn entry(entries: &[String], name: &str) -> Option<String> {
    entries.iter().find_map(|entry| {
        let (key, value) = entry.split_once('=')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.to_string())
    })
}

/// A list read at most once, when first needed.
#[derive(Default)]
struct Lazy(Option<Vec<String>>);

impl Lazy {
    fn get(&mut self, spi: &mut Spi<'_>, read: impl FnOnce(&mut Spi<'_>) -> Result<Vec<String>>) -> Result<&[String]> {
        if self.0.is_none() {
            self.0 = Some(read(spi)?);
        }
        Ok(self.0.as_deref().unwrap_or_default())
    }
}

/// The settings PostgreSQL's configuration files hold (`name=value`), the
/// last one read first; none when the running role may not read them.
fn configuration_files(spi: &mut Spi<'_>) -> Result<Vec<String>> {
    Ok(spi::one::<Vec<String>>(
        spi,
        "SELECT CASE WHEN pg_catalog.pg_has_role('pg_read_all_settings', 'MEMBER') \
                THEN array(SELECT name || '=' || setting FROM pg_catalog.pg_file_settings \
                           WHERE error IS NULL AND setting IS NOT NULL ORDER BY seqno DESC) END",
        &[],
    )?
    .unwrap_or_default())
}

/// PostgreSQL's built-in values of `names` (`name=value`), where it has one.
fn built_in(spi: &mut Spi<'_>, names: &[String]) -> Result<Vec<String>> {
    Ok(spi::one::<Vec<String>>(
        spi,
        "SELECT array(SELECT name || '=' || boot_val FROM pg_catalog.pg_settings WHERE name = ANY($1) AND boot_val IS NOT NULL)",
        &[names.to_vec().into()],
    )?
    .unwrap_or_default())
}
