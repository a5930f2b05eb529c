//! A change log emptied behind Tandem's back (`DELETE FROM tandem_log_N`
//! by a tool or a person): SQLite then counts changes from 1 again, below
//! the counter the server acknowledged, and the file's new changes would
//! pass for sent ones, never uploaded and then overwritten. Found by an
//! attack on verify. The acknowledged counter goes back to 0, so every
//! change the log holds goes up (acknowledged entries are never kept, so
//! all it holds is unsent).

use rusqlite::Connection;
use tandem_core::sql::local;

use crate::error::Result;
use crate::meta::{self, ScopeState};

/// Checks each table of the scope; returns how many logs were mended.
pub fn mend(conn: &Connection, state: &ScopeState) -> Result<usize> {
    let mut mended = 0;
    for (table, t) in state.schema.tables.iter().zip(&state.tables) {
        if t.acked_seq == 0 {
            continue;
        }
        let again: bool = conn.prepare_cached(&local::counted_again(table, t.id))?.query_row([t.acked_seq], |r| r.get(0))?;
        if again {
            meta::reset_acked(conn, t.id)?;
            mended += 1;
        }
    }
    Ok(mended)
}
