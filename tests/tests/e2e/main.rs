//! The end-to-end tests, one module a subject, in one test binary: one
//! link instead of 34, and both test threads busy to the end instead of
//! idling through each file's slowest test (build and run of this crate:
//! 114 s as 34 binaries, 64 s as one).
//! Run one subject with `cargo test -p tandem-tests --test e2e <module>::`.

mod apply_reads;
mod batches;
mod bulk_writes;
mod caller_settings;
mod canonical_keys;
mod commit_order;
mod conflicts;
mod conformance;
mod echoes;
mod gateway;
mod grouped_writes;
mod hostile;
mod incremental_plan;
mod kept_plans;
mod key_changes;
mod lifecycle;
mod live;
mod loadable_extension;
mod local_sync;
mod local_types;
mod lock_waits;
mod names;
mod notifications;
mod partitions;
mod pgbench;
mod poison;
mod program_triggers;
mod provisioning;
mod replicas;
mod restore;
mod schema_changes;
mod tenants;
mod tls;
mod trust;
mod types;
mod upgrade;
mod vacated_keys;
mod verify;
mod xid_epoch;
