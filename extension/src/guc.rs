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
    let c_name = c_string(name, name)?;
    let c_value = c_string(name, value)?;
    // SAFETY: the arguments set_config_by_name passes; an invalid value
    // raises an ERROR, which aborts the call.
    unsafe {
        let context = if pg_sys::superuser() { pg_sys::GucContext::PGC_SUSET } else { pg_sys::GucContext::PGC_USERSET };
        pg_sys::set_config_option(
            c_name.as_ptr(),
            c_value.as_ptr(),
            context,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
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
