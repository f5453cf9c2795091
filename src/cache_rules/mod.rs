//! The HTTP caching rules, pure and in one place (the bottom layer: no I/O,
//! no crate imports outside this folder), as pingora-cache keeps its model:
//! - [`cache_control`]: the `Cache-Control` parser and delta-seconds
//!   (RFC 9111 §5.2, §1.2.2);
//! - [`upstream_freshness`]: a document's freshness from the upstream's
//!   headers, clamped to `[--min-ttl, --ttl]` (RFC 9111 §4.2, RFC 5861);
//! - [`freshness`]: fresh / stale / expired and the refresh-ahead age;
//! - [`outcome`]: the one enum of cache outcomes that renders
//!   `Cache-Status` (RFC 9211), the `result` metric label and the log field.
//!
//! `upstream`, `check` and `cache` use them, so they stay below all three.

pub mod cache_control;
pub mod freshness;
pub mod outcome;
pub mod upstream_freshness;
