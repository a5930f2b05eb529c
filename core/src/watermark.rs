//! Watermarks: where a pull ends and the next one begins.
//!
//! A complete pull ends at a PostgreSQL snapshot (`xmin:xmax:xip,...`), taken
//! in the same statement that reads the rows. The next pull selects versions
//! that snapshot did not see: `version >= xmin AND NOT visible(version)`, so a
//! transaction that committed late (older xid, later commit) is never
//! skipped and nothing is sent twice. A pull split into batches carries its
//! position in the watermark, so a crash between batches resumes where it
//! stopped.

use std::fmt;

use serde_json::Value;

use crate::error::{Error, Result};

/// A PostgreSQL snapshot in its text form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub xip: Vec<u64>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip_text = parts.next()?;
        // PostgreSQL holds no snapshot from before its first transaction.
        if parts.next().is_some() || xmin > xmax || xmin == 0 {
            return None;
        }
        let xip =
            if xip_text.is_empty() { Vec::new() } else { xip_text.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()? };
        if xip.iter().any(|x| *x < xmin || *x >= xmax) {
            return None;
        }
        Some(Snapshot { xmin, xmax, xip })
    }

    /// Whether a transaction that has committed is visible in this snapshot
    /// (as `pg_visible_in_snapshot` says of committed xids).
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.xip.contains(&xid))
    }

    /// Marks a transaction as still running: used for the caller's own
    /// transaction, whose uncommitted changes a pull may include but must send
    /// again once they commit.
    pub fn with_in_progress(mut self, xid: u64) -> Self {
        if xid >= self.xmax || self.xip.contains(&xid) {
            return self;
        }
        self.xip.push(xid);
        self.xip.sort_unstable();
        self.xmin = self.xmin.min(xid);
        self
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (i, x) in self.xip.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{x}")?;
        }
        Ok(())
    }
}

/// What a file had received of the server's changes when it sent an
/// upload: every change visible in [`Horizon::snapshot`], and its own
/// uploads whose answers it recorded since ([`Horizon::own`], the echoes
/// it would not be sent back). An insert of a key whose exit from the
/// partition lies beyond it was made without knowing of that exit
/// (design.md, "Conflicts are detected by version").
#[derive(Clone, Debug, PartialEq)]
pub struct Horizon {
    snapshot: Snapshot,
    own: Vec<u64>,
    unmatched: Vec<u64>,
}

impl Horizon {
    /// The horizon of a file at `watermark` whose recorded uploads are
    /// `own`. A pull cut short covers what its window began from; a first
    /// pull cut short, what it reads up to: a row deleted before that was
    /// never sent to the file, so the file cannot have held it.
    pub fn new(watermark: &Watermark, own: Vec<u64>) -> Self {
        let snapshot = match watermark {
            Watermark::Complete(snapshot) | Watermark::Partial { since: Some(snapshot), .. } => snapshot.clone(),
            Watermark::Partial { until, since: None, .. } => until.clone(),
        };
        Horizon { snapshot, own, unmatched: Vec::new() }
    }

    /// The horizon, less the deletes that reached no row of the file
    /// though the snapshot covers them (see `options::Seen::unmatched`).
    pub fn with_unmatched(self, unmatched: Vec<u64>) -> Self {
        Horizon { unmatched, ..self }
    }

    /// The snapshot whose visible changes had reached the file.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The file's own uploads whose answers it recorded.
    pub fn own(&self) -> &[u64] {
        &self.own
    }

    /// Deletes the snapshot covers that reached no row of the file.
    pub fn unmatched(&self) -> &[u64] {
        &self.unmatched
    }
}

/// Which part of a pull a batch position is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Upserts,
    Deletes,
}

/// Where a pull stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Watermark {
    /// Everything up to this snapshot has been delivered.
    Complete(Snapshot),
    /// A pull of the window (`since`, `until`] stopped after a batch.
    Partial {
        until: Snapshot,
        since: Option<Snapshot>,
        phase: Phase,
        table: usize,
        /// Key of the last row sent in `table`, `None` to start the table.
        after: Option<Vec<Value>>,
    },
}

impl Watermark {
    /// The first transaction id the watermark's history had not reached:
    /// a server whose own record of a replica stops before it lost that
    /// history (a restore, a point-in-time recovery).
    pub fn frontier(&self) -> u64 {
        match self {
            Watermark::Complete(snapshot) => snapshot.xmax,
            Watermark::Partial { until, .. } => until.xmax,
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::InvalidWatermark(text.to_string());
        if !text.contains('/') {
            return Snapshot::parse(text).map(Watermark::Complete).ok_or_else(bad);
        }
        let mut parts = text.splitn(4, '/');
        let until = Snapshot::parse(parts.next().ok_or_else(bad)?).ok_or_else(bad)?;
        let since = match parts.next().ok_or_else(bad)? {
            "-" => None,
            s => Some(Snapshot::parse(s).ok_or_else(bad)?),
        };
        let position = parts.next().ok_or_else(bad)?;
        let phase = match position.get(..1) {
            Some("u") => Phase::Upserts,
            Some("d") => Phase::Deletes,
            _ => return Err(bad()),
        };
        let table = position[1..].parse().map_err(|_| bad())?;
        let after = match serde_json::from_str::<Value>(parts.next().ok_or_else(bad)?).map_err(|_| bad())? {
            Value::Null => None,
            Value::Array(key) if !key.is_empty() => Some(key),
            _ => return Err(bad()),
        };
        Ok(Watermark::Partial { until, since, phase, table, after })
    }
}

impl fmt::Display for Watermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Watermark::Complete(snapshot) => write!(f, "{snapshot}"),
            Watermark::Partial { until, since, phase, table, after } => {
                let since = since.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                let phase = match phase {
                    Phase::Upserts => "u",
                    Phase::Deletes => "d",
                };
                let after = after.as_ref().map(|k| Value::Array(k.clone())).unwrap_or(Value::Null);
                write!(f, "{until}/{since}/{phase}{table}/{after}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_horizon_covers_what_a_file_received() {
        let complete = Horizon::new(&Watermark::parse("100:110:105").unwrap(), vec![120]);
        assert_eq!((complete.snapshot().to_string(), complete.own()), ("100:110:105".to_string(), &[120][..]));
        // Cut short: what its window began from, or for a first pull the
        // snapshot it reads up to.
        let resumed = Horizon::new(&Watermark::parse(r#"200:210:/100:110:/u0/[5]"#).unwrap(), vec![]);
        assert_eq!(resumed.snapshot().to_string(), "100:110:");
        let first = Horizon::new(&Watermark::parse(r#"200:210:/-/d1/null"#).unwrap(), vec![]);
        assert_eq!(first.snapshot().to_string(), "200:210:");
    }

    #[test]
    fn snapshots_parse_and_print() {
        let s = Snapshot::parse("100:110:102,105").unwrap();
        assert_eq!(s.xip, vec![102, 105]);
        assert_eq!(s.to_string(), "100:110:102,105");
        assert_eq!(Snapshot::parse("729:731:").unwrap().xip, Vec::<u64>::new());
        for bad in ["", "1:2", "2:1:", "1:5:7", "a:b:", "1:2:3:4", "0:0:", "0:5:"] {
            assert!(Snapshot::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_snapshot_sees_what_committed_before_it() {
        let s = Snapshot::parse("100:110:102,105").unwrap();
        assert!(s.sees(99) && s.sees(100) && s.sees(109));
        assert!(!s.sees(102) && !s.sees(105) && !s.sees(110));
    }

    #[test]
    fn own_transaction_is_marked_in_progress() {
        let s = Snapshot::parse("729:731:").unwrap().with_in_progress(729);
        assert_eq!(s.to_string(), "729:731:729");
        let s = Snapshot::parse("729:731:").unwrap().with_in_progress(731);
        assert_eq!(s.to_string(), "729:731:", "an xid at or past xmax is already invisible");
    }

    #[test]
    fn partial_watermarks_round_trip() {
        let w = Watermark::Partial {
            until: Snapshot::parse("100:110:").unwrap(),
            since: Some(Snapshot::parse("90:95:91").unwrap()),
            phase: Phase::Deletes,
            table: 2,
            after: Some(vec![json!(7), json!("a/b")]),
        };
        assert_eq!(Watermark::parse(&w.to_string()).unwrap(), w);
        let w =
            Watermark::Partial { until: Snapshot::parse("100:110:").unwrap(), since: None, phase: Phase::Upserts, table: 0, after: None };
        assert_eq!(Watermark::parse(&w.to_string()).unwrap(), w);
        for bad in ["garbage", "1:2:/-/x0/null", "1:2:/-/u0/[]", "1:2:/-/u/null"] {
            assert!(Watermark::parse(bad).is_err(), "{bad}");
        }
    }
}
