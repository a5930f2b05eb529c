//! `#[pg_test]` tests: each runs inside one transaction of a scratch
//! PostgreSQL that `cargo pgrx test` starts, and is rolled back. Each file
//! holds its tests in a `#[pg_schema] mod tests` (pgrx calls them from the
//! `tests` schema). Behaviour across transactions and connections (commit
//! order, concurrency) is tested against the real server in `tests/`.

mod apply;
mod clients;
mod conflicts;
mod provision;
mod select;
mod status;
pub mod support;
mod tracking;
