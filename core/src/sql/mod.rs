//! SQL generation for both sides. Every statement Tandem runs on a user's
//! tables is built here, with identifiers quoted by [`crate::ident`], and
//! values left as bound parameters.
