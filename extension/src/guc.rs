//! Settings a sync call reads and sets around its work, through
//! PostgreSQL's own functions rather than `SELECT set_config(...)`: a call
//! saves and puts back a dozen of them, and each statement would be parsed
//! and planned again, which a new backend's first round pays in full.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use tandem_core::{Error, Result};

fn c_string(what: &str, text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::Internal(format!("setting {what} holds a NUL byte")))
}

/// The setting's value, as `current_setting(name)` shows it.
pub fn get(name: &str) -> Result<String> {
    let c_name = c_string(name, name)?;
    // SAFETY: a known setting's name; PostgreSQL raises an ERROR for an
    // unknown one (pgrx turns it into a panic that aborts the call), and
    // returns a palloc'd string it no longer uses, copied out here.
    unsafe {
        let value = pg_sys::GetConfigOptionByName(c_name.as_ptr(), std::ptr::null_mut(), false);
        if value.is_null() {
            return Ok(String::new());
        }
        let text = CStr::from_ptr(value).to_string_lossy().into_owned();
        pg_sys::pfree(value.cast());
        Ok(text)
    }
}

/// What sync reads of one setting, copied out of PostgreSQL's table.
struct Variable {
    name: CString,
    reset_source: pg_sys::GucSource::Type,
}

/// Visits PostgreSQL's table of settings, custom ones the backend made
/// included, until `visit` returns something.
fn scan<T>(mut visit: impl FnMut(&CStr, &pg_sys::config_generic) -> Option<T>) -> Option<T> {
    // SAFETY: PostgreSQL's table of settings lives as long as the backend,
    // and nothing is set while it is read.
    unsafe {
        let all = pg_sys::get_guc_variables();
        let count = usize::try_from(pg_sys::GetNumConfigOptions()).unwrap_or(0);
        for i in 0..count {
            let variable = *all.add(i);
            if variable.is_null() {
                continue;
            }
            if let Some(found) = visit(CStr::from_ptr((*variable).name), &*variable) {
                return Some(found);
            }
        }
    }
    None
}

/// The setting `name`, if the backend knows it.
fn variable(name: &str) -> Option<Variable> {
    scan(|found, v| {
        found.to_bytes().eq_ignore_ascii_case(name.as_bytes()).then(|| Variable { name: found.to_owned(), reset_source: v.reset_source })
    })
}

/// The value a new session of this database starts with, when no caller
/// can have chosen it: PostgreSQL's configuration, or an `ALTER SYSTEM`,
/// `ALTER ROLE ALL` or `ALTER DATABASE ... SET`. `None` when the session's
/// role (which may set its own) or its connection's options set it.
pub fn configured(name: &str) -> Result<Option<String>> {
    let Some(found) = variable(name) else { return Ok(None) };
    if found.reset_source > pg_sys::GucSource::PGC_S_DATABASE {
        return Ok(None);
    }
    // SAFETY: a known setting's name; the reset value is PostgreSQL's own
    // string, copied out.
    unsafe {
        let value = pg_sys::GetConfigOptionResetString(found.name.as_ptr());
        Ok((!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned()))
    }
}

/// Settings whose value at the session's start came from the session's
/// own role (`ALTER ROLE ... SET`, which a role may give itself) or its
/// connection's options: the caller's choice.
pub fn set_at_start_by_caller() -> Vec<String> {
    let mut names = Vec::new();
    scan::<()>(|name, v| {
        if (pg_sys::GucSource::PGC_S_USER..=pg_sys::GucSource::PGC_S_CLIENT).contains(&v.reset_source) {
            names.push(name.to_string_lossy().into_owned());
        }
        None
    });
    names
}

/// Sets `name` for the transaction as [`set_local`] does, leaving it as
/// it is when PostgreSQL refuses the value (as a session's start leaves a
/// role's setting it refuses, with a warning).
pub fn set_local_if_valid(name: &str, value: &str) -> Result<()> {
    set_local_at(name, value, pg_sys::DEBUG1 as i32)
}

/// Puts every setting the running session changed (`SET`, `SET LOCAL`,
/// `set_config`) back to what the session started with, for the current
/// GUC nest level, except those `kept` names (what sync pins itself): the
/// owner's code then computes with nothing a caller chose (a custom
/// `app.user` an audit trigger reads, `default_text_search_config`,
/// `transform_null_equals`).
pub fn reset_session_changes(kept: impl Fn(&str) -> bool) -> Result<()> {
    let mut changed: Vec<CString> = Vec::new();
    scan::<()>(|name, v| {
        let reset = v.source == pg_sys::GucSource::PGC_S_SESSION
            && v.context == pg_sys::GucContext::PGC_USERSET
            && v.flags as u32 & pg_sys::GUC_NO_RESET_ALL == 0
            && !kept(&name.to_string_lossy());
        if reset {
            changed.push(name.to_owned());
        }
        None
    });
    for name in changed {
        // SAFETY: a known setting's name; a NULL value is `RESET`: the
        // value the session started with.
        unsafe {
            pg_sys::set_config_option(
                name.as_ptr(),
                std::ptr::null(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_LOCAL,
                true,
                0,
                false,
            );
        }
    }
    Ok(())
}

/// Refuses `function` in a read-only transaction (a standby's included),
/// before it writes anything (see [`Error::ReadOnly`]).
pub fn refuse_read_only(function: &'static str) -> Result<()> {
    match get("transaction_read_only")?.as_str() {
        "on" => Err(Error::ReadOnly { function }),
        _ => Ok(()),
    }
}

/// Sets `name` for the transaction, as `set_config(name, value, true)`
/// does: with the current role's rights, undone by the transaction's end.
pub fn set_local(name: &str, value: &str) -> Result<()> {
    set_local_at(name, value, 0)
}

/// [`set_local`], a refused value raised at `elevel` (0: as an ERROR).
fn set_local_at(name: &str, value: &str, elevel: i32) -> Result<()> {
    let c_name = c_string(name, name)?;
    let c_value = c_string(name, value)?;
    // SAFETY: the arguments set_config_by_name passes; an invalid value
    // raises an ERROR, which aborts the call, or below ERROR is reported at
    // `elevel` and left unset.
    unsafe {
        let context = if pg_sys::superuser() { pg_sys::GucContext::PGC_SUSET } else { pg_sys::GucContext::PGC_USERSET };
        pg_sys::set_config_option(
            c_name.as_ptr(),
            c_value.as_ptr(),
            context,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            elevel,
            false,
        );
    }
    Ok(())
}

/// Sets `name` for the transaction and returns what it was.
pub fn swap_local(name: &str, value: &str) -> Result<String> {
    let previous = get(name)?;
    set_local(name, value)?;
    Ok(previous)
}

/// Runs `body` with `name` set to `value` for it, then puts back what it
/// was, also when `body` failed (the caller may go on, in a subtransaction
/// that caught the error).
pub fn with_local<T>(name: &str, value: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    let previous = swap_local(name, value)?;
    let result = body();
    set_local(name, &previous)?;
    result
}

/// The caller's `lock_timeout` in milliseconds (0: none).
pub fn lock_timeout_ms() -> i64 {
    // SAFETY: a backend global PostgreSQL keeps in step with the setting.
    i64::from(unsafe { pg_sys::LockTimeout })
}
