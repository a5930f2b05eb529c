//! The loadable SQLite extension `libtandem_sqlite.so`: loading it into any
//! SQLite host registers the same `sync_*` functions as `tandem-local`.
//!
//! ```sql
//! .load ./libtandem_sqlite
//! SELECT sync_run('postgres://app@db.example.com/crm', 'crm', '{"params": {"tenant": 3}}');
//! ```

use std::os::raw::{c_char, c_int};

use rusqlite::{ffi, Connection};

fn init(db: Connection) -> rusqlite::Result<bool> {
    tandem_local::functions::register(&db)?;
    Ok(false)
}

/// The oldest SQLite these bindings run on (rusqlite's minimum).
const OLDEST_SQLITE: c_int = 3_034_001;

/// Refuses a host SQLite that is too old with a message, instead of letting
/// the bindings fail without one.
unsafe fn too_old(pz_err_msg: *mut *mut c_char, p_api: *mut ffi::sqlite3_api_routines) -> bool {
    let api = unsafe { &*p_api };
    let Some(version) = api.libversion_number.map(|f| unsafe { f() }) else { return true };
    if version >= OLDEST_SQLITE {
        return false;
    }
    let message = format!(
        "tandem needs SQLite 3.34.1 or newer; this host has {}.{}.{}\0",
        version / 1_000_000,
        version / 1000 % 1000,
        version % 1000
    );
    if let (false, Some(malloc)) = (pz_err_msg.is_null(), api.malloc) {
        let buffer = unsafe { malloc(message.len() as c_int) } as *mut u8;
        if !buffer.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(message.as_ptr(), buffer, message.len());
                *pz_err_msg = buffer as *mut c_char;
            }
        }
    }
    true
}

/// The entry point by Tandem's name.
///
/// # Safety
/// Called by SQLite's extension loader with a valid handle and API table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_tandem_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    if p_api.is_null() || unsafe { too_old(pz_err_msg, p_api) } {
        return ffi::SQLITE_ERROR;
    }
    unsafe { Connection::extension_init2(db, pz_err_msg, p_api, init) }
}

/// The entry point SQLite derives from the file name (`libtandem_sqlite` ->
/// `sqlite3_tandemsqlite_init`), so `.load ./libtandem_sqlite` needs no
/// entry-point argument.
///
/// # Safety
/// As for [`sqlite3_tandem_init`].
#[no_mangle]
pub unsafe extern "C" fn sqlite3_tandemsqlite_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    unsafe { sqlite3_tandem_init(db, pz_err_msg, p_api) }
}
