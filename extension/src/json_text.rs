//! `jsonb` and `json` arguments and results carried as JSON text, so a large
//! changeset is parsed once, straight into Tandem's types, instead of going
//! through `serde_json::Value` on the way in and out.

use std::ffi::CString;

use pgrx::prelude::*;
use pgrx::{direct_function_call, direct_function_call_as_datum};

/// A `jsonb` value as text (printed with `jsonb_out`, read with `jsonb_in`).
#[derive(Debug)]
pub struct JsonbText(pub String);

/// A `json` value as its text, untouched both ways.
#[derive(Debug)]
pub struct JsonText(pub String);

impl_sql_translatable!(JsonbText, "jsonb");
impl_sql_translatable!(JsonText, "json");

impl FromDatum for JsonbText {
    /// # Safety
    /// `datum` must be a `jsonb` datum (pgrx calls this only for arguments
    /// declared `jsonb`).
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        let text = direct_function_call::<&core::ffi::CStr>(pg_sys::jsonb_out, &[Some(datum)])?;
        let owned = text.to_string_lossy().into_owned();
        // SAFETY: jsonb_out palloc'd the string; it is copied into `owned`
        // and not used after this.
        unsafe { pg_sys::pfree(text.as_ptr() as *mut core::ffi::c_void) };
        Some(JsonbText(owned))
    }
}

impl IntoDatum for JsonbText {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        // JSON text from serde or Tandem's writers never holds a raw NUL.
        let text = CString::new(self.0).unwrap_or_default();
        // SAFETY: jsonb_in reads a NUL-terminated C string, which `text`
        // is and outlives the call; it returns a palloc'd jsonb datum.
        unsafe { direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())]) }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

impl FromDatum for JsonText {
    /// # Safety
    /// `datum` must be a `json` datum (pgrx calls this only for arguments
    /// declared `json`).
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, oid: pg_sys::Oid) -> Option<Self> {
        // SAFETY: json is stored as text, which String reads.
        unsafe { String::from_polymorphic_datum(datum, is_null, oid) }.map(JsonText)
    }
}

impl IntoDatum for JsonText {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        self.0.into_datum()
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONOID
    }
}

/// The calling-convention glue both types share: the same as pgrx's for
/// `String` (SAFETY: each type's datum is a varlena its FromDatum reads and
/// its IntoDatum makes; a NULL argument is a panic pgrx reports as an
/// error, and `Option` arguments take the nullable path).
macro_rules! json_abi {
    ($ty:ty) => {
        unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for $ty {
            unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
                let index = arg.index();
                unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
            }

            unsafe fn unbox_nullable_arg(arg: pgrx::callconv::Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
                unsafe { arg.unbox_arg_using_from_datum().into() }
            }
        }

        unsafe impl pgrx::callconv::BoxRet for $ty {
            unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
                match self.into_datum() {
                    Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
                    None => fcinfo.return_null(),
                }
            }
        }
    };
}

json_abi!(JsonbText);
json_abi!(JsonText);

impl JsonbText {
    pub fn from_value(value: &impl serde::Serialize) -> Self {
        JsonbText(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
    }

    /// The value, as serde reads it. jsonb prints valid JSON, but a number
    /// beyond what serde reads (`1e400`) is an error here, not a NULL.
    pub fn parse(&self) -> tandem_core::Result<serde_json::Value> {
        serde_json::from_str(&self.0).map_err(|e| tandem_core::Error::InvalidOptions(format!("unreadable JSON: {e}")))
    }
}
