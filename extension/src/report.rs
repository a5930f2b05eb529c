//! Raising Tandem's errors as PostgreSQL errors, with their SQLSTATE and, for
//! rejected uploads, a JSON DETAIL naming each refused row.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use tandem_core::Error;

/// `MAKE_SQLSTATE` of PostgreSQL's elog.h.
fn error_code(sqlstate: &str) -> PgSqlErrorCode {
    let code = sqlstate.bytes().enumerate().map(|(i, c)| (((c as i32) - ('0' as i32)) & 0x3F) << (6 * i)).sum::<i32>();
    PgSqlErrorCode::from(code)
}

/// Raises `error` as an ERROR (never returns).
pub fn raise(error: Error, function: &'static str) -> ! {
    let mut report = ErrorReport::new(error_code(error.sqlstate()), error.to_string(), function);
    if let Some(detail) = error.detail() {
        report = report.set_detail(detail);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// An argument a function cannot do without: NULL is a clear error (the
/// functions are not STRICT, which would return NULL without a word).
pub fn required<T>(value: Option<T>, name: &'static str) -> Result<T, Error> {
    value.ok_or(Error::NullArgument(name))
}

/// Parsed options (NULL: none).
pub fn options(value: Option<crate::json_text::JsonbText>) -> Result<Option<serde_json::Value>, Error> {
    value.map(|v| v.parse()).transpose()
}

/// Runs a SQL function body, raising its error as a PostgreSQL error.
pub fn run<T>(function: &'static str, body: impl FnOnce() -> Result<T, Error>) -> T {
    match body() {
        Ok(value) => value,
        Err(error) => raise(error, function),
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::error_code;
    use pgrx::prelude::*;

    #[pg_test]
    fn sqlstates_map_to_postgres_codes() {
        assert_eq!(error_code("42704"), PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT);
        assert_eq!(error_code("22P02"), PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION);
        assert_eq!(error_code("42501"), PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE);
    }
}
