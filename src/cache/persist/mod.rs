//! Persistence (`--state-dir`), in one folder: every validated document is
//! saved off the serving path and read back, checked and validated again
//! exactly like a fetched one, so a restart during an upstream outage still
//! serves the last good bytes.
//! - [`store`]: the file format and the directory (atomic saves, checked
//!   loads, the lock); knows nothing of HTTP, validation or the cache;
//! - [`writer`]: the writer thread and the handle the cache saves through;
//! - [`restore`]: reading saved copies back into stored documents;
//! - [`disk_index`]: which tenants of a template have a file, in
//!   least-recently-used order (the disk tier's index; names only).

pub mod disk_index;
pub mod restore;
pub mod store;
pub mod writer;

pub use restore::RestoreReport;
pub use writer::StateWriter;
