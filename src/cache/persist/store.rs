//! Durable copies of validated metadata documents in a state directory
//! (`--state-dir`), so a restarted gateway can serve them while the upstream
//! is down.
//!
//! This module only stores and returns bytes and the facts the gateway
//! recorded about them; it knows nothing about HTTP, the cache or
//! validation. The caller decides what to save and validates what it loads
//! again exactly as if it had just been fetched (issuer included): a file
//! that passes every check below is *intact*, not *trusted*.
//!
//! # Files
//!
//! One file per document, named from its key (the document's configured
//! name, any UTF-8): the lowercase hex of the first 16 bytes of
//! SHA-256(key) followed by [`EXTENSION`], e.g.
//! `3f2a…9c.json-doc` (32 hex digits). Any key maps to a safe name of fixed
//! length; two keys sharing a name would need a 128-bit SHA-256 collision.
//!
//! A *member key* `GROUP@MEMBER` (see [`member_parts`]: a group whose
//! name holds `{`, such as an issuer template, and a member name of
//! [`MEMBER_CHARS`]) is named so that the directory's listing alone says
//! whose it is, without reading the file: [`MEMBER_PREFIX`], 32 hex digits
//! of SHA-256(GROUP) (the group's *tag*), `-`, the member name as is, and
//! [`EXTENSION`], e.g. `m-8c1e…40-acme.json-doc`. [`StateDir::list_members`]
//! lists a group's members with their size and modification time (the
//! last save) from that alone, so 100,000 members are indexed at start-up
//! without opening one. Member names differing only in letter case share a
//! file on a case-insensitive file system: the key check on load (5.
//! below) then refuses the other member's copy, which is never served.
//! Other names in the directory are ignored, except the temporary files
//! of an interrupted save (names starting with [`TEMP_PREFIX`]), which
//! [`StateDir::open`] deletes.
//!
//! # Format
//!
//! A file is one header line of JSON, a `\n`, then the body bytes exactly
//! as received (never re-serialised). The header's members, in this order:
//!
//! | member | meaning |
//! |---|---|
//! | `format` | [`FORMAT`]: `oauth-metadata-gateway/state/` + the format version (2; version 1 files, which lack the members marked v2, are still read) |
//! | `key`, `issuer`, `upstream_url` | strings, see [`SavedDocument`] |
//! | `fetched_at_unix_ms` | wall clock at receipt, milliseconds since the Unix epoch |
//! | `upstream_age_ms`, `lifetime_ms` | the upstream's `Age` and the freshness lifetime, milliseconds |
//! | `etag`, `last_modified` | the upstream validators, strings or `null` |
//! | `cache_control`, `expires` | (v2) the upstream's `Cache-Control` and `Expires`, strings or `null`: a `304` without them keeps them (RFC 9111 §4.3.4), after a restart too |
//! | `advertised_ms`, `stale_if_error_until_ms` | (v2) the freshness the upstream allowed (what downstream caches are told) and the end of its `stale-if-error`, milliseconds (the latter may be `null`); a v1 file stands in `lifetime_ms` and `null` |
//! | `body_len` | the body's length in bytes |
//! | `sha256` | lowercase hex SHA-256 of the header line up to (excluding) `,"sha256":"`, followed by the body |
//!
//! The checksum covers the header as well as the body, so a damaged ETag or
//! timestamp is detected like a damaged body. Times and durations are kept
//! to the millisecond (sub-millisecond parts are dropped on save).
//!
//! # Durability
//!
//! [`StateDir::save`] is atomic: it writes a temporary file in the same
//! directory, fsyncs it, renames it over the target and fsyncs the
//! directory. After a crash or power loss at any point a reader finds the
//! previous complete file or the new complete file, never a mixture; at
//! worst a temporary file is left behind, and the next [`StateDir::open`]
//! removes it. A state directory belongs to one gateway process at a time:
//! [`StateDir::open`] takes an exclusive `flock` on [`LOCK_FILE`] and refuses
//! a directory another process holds ([`StateError::Locked`]).
//!
//! # Loading
//!
//! [`StateDir::load`] checks, in this order, and reports the first failure
//! as a [`LoadProblem`]; it never panics, whatever the file holds:
//! 1. size: a file larger than `max_body` + [`MAX_HEADER_LEN`] + 1 is
//!    [`LoadProblem::TooLarge`], and no more than that is ever read;
//! 2. header: a file that does not start with `{"format":"oauth-metadata-gateway/state/`
//!    is [`LoadProblem::NotAStateFile`]; another version is
//!    [`LoadProblem::UnsupportedVersion`]; a header that ends early is
//!    [`LoadProblem::Truncated`]; bad JSON, unknown or missing members,
//!    absurd times (past year 9999) or durations (over 2^31 seconds) are
//!    [`LoadProblem::Corrupt`]; a declared body over `max_body` is
//!    [`LoadProblem::TooLarge`];
//! 3. body length: shorter than declared is [`LoadProblem::Truncated`],
//!    longer is [`LoadProblem::Corrupt`];
//! 4. checksum: [`LoadProblem::Corrupt`];
//! 5. key and file name: a file whose key does not give its own name (a
//!    file copied or renamed from another document) is
//!    [`LoadProblem::ForeignKey`] (a member key's file may also have the
//!    hashed name earlier versions gave it).

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The `format` member of every header: this prefix plus [`FORMAT_VERSION`].
pub const FORMAT: &str = "oauth-metadata-gateway/state/2";
/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 2;
/// The earlier format this build still reads (without the v2 members).
const FORMAT_V1: &str = "oauth-metadata-gateway/state/1";
/// Every state file's name ends with this.
pub const EXTENSION: &str = ".json-doc";
/// The file of a member key starts with this (see the module doc).
pub const MEMBER_PREFIX: &str = "m-";
/// The bytes a member name may have (no `/`, never `.` or `..` alone).
pub const MEMBER_CHARS: &str = "ASCII letters, digits, '-', '_', '.'";
/// Longest member name kept under its own name, in bytes (a file name
/// stays under the usual 255-byte limit).
pub const MAX_MEMBER_LEN: usize = 128;
/// Temporary files (an interrupted save, the writability probe) start with
/// this; [`StateDir::open`] deletes them.
pub const TEMP_PREFIX: &str = ".tmp-";
/// The lock file: one gateway process per state directory.
pub const LOCK_FILE: &str = ".lock";
/// Longest header line accepted or written, in bytes (without the `\n`).
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// What every state file starts with (the header's first member).
const MAGIC: &[u8] = b"{\"format\":\"oauth-metadata-gateway/state/";
/// `format` values are `FORMAT_PREFIX` + a version number.
const FORMAT_PREFIX: &str = "oauth-metadata-gateway/state/";
/// Bytes of the header line after the checksummed part:
/// `,"sha256":"` + 64 hex digits + `"}`.
const CHECKSUM_TAIL_LEN: usize = SHA256_FIELD.len() + 64 + 2;
const SHA256_FIELD: &str = ",\"sha256\":\"";
/// Latest accepted `fetched_at`: 9999-12-31T23:59:59.999Z.
const MAX_UNIX_MS: u64 = 253_402_300_799_999;
/// Longest accepted duration: 2^31 seconds (the delta-seconds cap of
/// RFC 9111 §1.2.2), in milliseconds.
const MAX_DURATION_MS: u64 = (1 << 31) * 1000;

/// Distinguishes temporary files made by one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A state directory: where validated documents are kept across restarts.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// The open [`LOCK_FILE`], holding an exclusive `flock` for as long as
    /// any clone lives (`None` when the directory is read-only: nothing is
    /// written, so there is nothing to protect).
    _lock: Option<Arc<File>>,
}

/// One saved document and what the gateway knew about it when it was
/// received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedDocument {
    /// The document's identity: its configured name, e.g.
    /// `oauth-authorization-server/tenant1`; any UTF-8.
    pub key: String,
    /// The issuer the document was validated against.
    pub issuer: String,
    /// The URL it was fetched from.
    pub upstream_url: String,
    /// Wall clock when it was received (kept to the millisecond).
    pub fetched_at: SystemTime,
    /// The upstream's `Age` at receipt (kept to the millisecond).
    pub upstream_age: Duration,
    /// Freshness left at receipt, as the gateway computed it (kept to the
    /// millisecond).
    pub lifetime: Duration,
    /// The freshness the upstream allowed at receipt (at most `lifetime`).
    pub advertised: Duration,
    /// When the upstream's `stale-if-error` ends, as residence time.
    pub stale_if_error_until: Option<Duration>,
    /// The upstream's `Cache-Control`.
    pub cache_control: Option<String>,
    /// The upstream's `Expires`.
    pub expires: Option<String>,
    /// The upstream's `ETag`, for `If-None-Match`.
    pub etag: Option<String>,
    /// The upstream's `Last-Modified`, for `If-Modified-Since`.
    pub last_modified: Option<String>,
    /// The exact bytes received, never altered.
    pub body: Bytes,
}

/// Why the state directory could not be opened or written.
#[derive(Debug, Error)]
pub enum StateError {
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "rename the temporary file to".
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the state directory's lock.
    #[error("the state directory {} is in use by another process ({holder}); give each gateway its own", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
        /// What the lock file says about its holder, e.g. `pid 1234`.
        holder: String,
    },
    /// The state directory path exists and is not a directory.
    #[error("the state directory {} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The document cannot be written in the file format (nothing was
    /// written).
    #[error("cannot save document {key:?}: {reason}")]
    Unrepresentable {
        /// The document's key.
        key: String,
        /// What is out of range.
        reason: &'static str,
    },
}

/// Why one state file was not loaded. The file is left in place; the next
/// save of the same key replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoadProblem {
    /// The file does not start like a state file of this gateway.
    #[error("not a state file (no oauth-metadata-gateway/state header)")]
    NotAStateFile,
    /// A state file of another format version.
    #[error("unsupported state file format version {0} (this build reads 1 and {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    /// The file ends early.
    #[error("truncated: {}", truncation(*.expected, *.found))]
    Truncated {
        /// The body length the header declares; `None` when the file ends
        /// inside the header.
        expected: Option<u64>,
        /// Bytes present: of the body, or of the whole file when the file
        /// ends inside the header.
        found: u64,
    },
    /// The file is damaged; the text says what is wrong.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The file's key does not hash to the file's name: it belongs to
    /// another document (copied or renamed).
    #[error("the file belongs to another key than its name says")]
    ForeignKey,
    /// The file, or the body it declares, is larger than allowed (bytes).
    #[error("too large: {0} bytes is over the limit")]
    TooLarge(u64),
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(String),
}

fn truncation(expected: Option<u64>, found: u64) -> String {
    match expected {
        Some(expected) => format!("the body has {found} of {expected} bytes"),
        None => format!("the file ends inside the header, after {found} bytes"),
    }
}

/// The header as written: borrowed, without the checksum (appended by hand
/// so the checksummed bytes are exactly the serialised prefix).
#[derive(Serialize)]
struct HeaderOut<'a> {
    format: &'a str,
    key: &'a str,
    issuer: &'a str,
    upstream_url: &'a str,
    fetched_at_unix_ms: u64,
    upstream_age_ms: u64,
    lifetime_ms: u64,
    etag: Option<&'a str>,
    last_modified: Option<&'a str>,
    cache_control: Option<&'a str>,
    expires: Option<&'a str>,
    advertised_ms: u64,
    stale_if_error_until_ms: Option<u64>,
    body_len: u64,
}

/// The header as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderIn {
    format: String,
    key: String,
    issuer: String,
    upstream_url: String,
    fetched_at_unix_ms: u64,
    upstream_age_ms: u64,
    lifetime_ms: u64,
    etag: Option<String>,
    last_modified: Option<String>,
    // v2 members, absent from v1 files.
    #[serde(default)]
    cache_control: Option<String>,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    advertised_ms: Option<u64>,
    #[serde(default)]
    stale_if_error_until_ms: Option<u64>,
    body_len: u64,
    sha256: String,
}

/// Only the `format` member, read first so another version is reported as
/// such rather than as unknown members.
#[derive(Deserialize)]
struct FormatProbe {
    format: String,
}

/// The file name (not a path) that stores `key`: for a member key (see
/// [`member_parts`]) its member file name, else 32 lowercase hex digits of
/// SHA-256(key) and [`EXTENSION`].
pub fn file_name_for(key: &str) -> String {
    match member_parts(key) {
        Some((group, member)) => member_file_name(&group_tag(group), member),
        None => hashed_file_name(key),
    }
}

/// The name of `key`'s file when it is named by hash: 32 lowercase hex
/// digits of SHA-256(key) and [`EXTENSION`] (every key but a member key;
/// member keys too in format versions before member files).
pub fn hashed_file_name(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut name = hex(&digest[..16]);
    name.push_str(EXTENSION);
    name
}

/// Whether a member name can be a file name as is.
fn valid_member(member: &str) -> bool {
    !member.is_empty()
        && member.len() <= MAX_MEMBER_LEN
        && member != "."
        && member != ".."
        && member
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Splits a member key `GROUP@MEMBER` (at its last `@`): a group whose
/// name holds `{` (no configured document's name does: an issuer
/// template's holds `{tenant}`) and a member of [`MEMBER_CHARS`], at most
/// [`MAX_MEMBER_LEN`] bytes. `None` for any other key.
pub fn member_parts(key: &str) -> Option<(&str, &str)> {
    let (group, member) = key.rsplit_once('@')?;
    (group.contains('{') && valid_member(member)).then_some((group, member))
}

/// A group's tag in its members' file names: 32 lowercase hex digits of
/// SHA-256(group).
pub fn group_tag(group: &str) -> String {
    hex(&Sha256::digest(group.as_bytes())[..16])
}

/// The file name of `member` of the group tagged `tag`.
fn member_file_name(tag: &str, member: &str) -> String {
    let mut name =
        String::with_capacity(MEMBER_PREFIX.len() + tag.len() + 1 + member.len() + EXTENSION.len());
    name.push_str(MEMBER_PREFIX);
    name.push_str(tag);
    name.push('-');
    name.push_str(member);
    name.push_str(EXTENSION);
    name
}

/// The group tag and member a member file's name holds; `None` for any
/// other name.
fn parse_member_file_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(MEMBER_PREFIX)?.strip_suffix(EXTENSION)?;
    let (tag, member) = rest.split_at_checked(32)?;
    let member = member.strip_prefix('-')?;
    let hex_tag = tag
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex_tag && valid_member(member)).then_some((tag, member))
}

/// One member file as listed: no byte of it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMember {
    /// The member's name (for a template: the tenant).
    pub member: String,
    /// The file's size in bytes.
    pub size: u64,
    /// When it was last written (its last save).
    pub modified: SystemTime,
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Serialises `doc` into the bytes of its state file.
fn encode(doc: &SavedDocument) -> Result<Vec<u8>, StateError> {
    let refuse = |reason| StateError::Unrepresentable {
        key: doc.key.clone(),
        reason,
    };
    let fetched_at = doc
        .fetched_at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| refuse("fetched_at is before the Unix epoch"))?;
    let fetched_at_unix_ms = millis(fetched_at);
    if fetched_at_unix_ms > MAX_UNIX_MS {
        return Err(refuse("fetched_at is after the year 9999"));
    }
    let upstream_age_ms = millis(doc.upstream_age);
    let lifetime_ms = millis(doc.lifetime);
    // Past 2^31 s it means "never": capped, not refused.
    let advertised_ms = millis(doc.advertised).min(MAX_DURATION_MS);
    let stale_if_error_until_ms = doc
        .stale_if_error_until
        .map(|d| millis(d).min(MAX_DURATION_MS));
    if upstream_age_ms > MAX_DURATION_MS || lifetime_ms > MAX_DURATION_MS {
        return Err(refuse("upstream_age or lifetime is over 2^31 seconds"));
    }
    let header = HeaderOut {
        format: FORMAT,
        key: &doc.key,
        issuer: &doc.issuer,
        upstream_url: &doc.upstream_url,
        fetched_at_unix_ms,
        upstream_age_ms,
        lifetime_ms,
        etag: doc.etag.as_deref(),
        last_modified: doc.last_modified.as_deref(),
        cache_control: doc.cache_control.as_deref(),
        expires: doc.expires.as_deref(),
        advertised_ms,
        stale_if_error_until_ms,
        body_len: doc.body.len() as u64,
    };
    let mut out = serde_json::to_vec(&header)
        .map_err(|_| refuse("the header cannot be serialised as JSON"))?;
    // `{...}` → `{...` then `,"sha256":"<hex>"}`.
    if out.pop() != Some(b'}') {
        return Err(refuse("the header cannot be serialised as JSON"));
    }
    if out.len() + CHECKSUM_TAIL_LEN > MAX_HEADER_LEN {
        return Err(refuse(
            "the header (key, issuer, URL, validators) is over 64 KiB",
        ));
    }
    let digest = checksum(&out, &doc.body);
    out.reserve(CHECKSUM_TAIL_LEN + 1 + doc.body.len());
    out.extend_from_slice(SHA256_FIELD.as_bytes());
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(b"\"}\n");
    out.extend_from_slice(&doc.body);
    Ok(out)
}

fn checksum(header_prefix: &[u8], body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(header_prefix);
    hasher.update(body);
    hex(&hasher.finalize())
}

fn corrupt(what: impl Into<String>) -> LoadProblem {
    LoadProblem::Corrupt(what.into())
}

/// Parses the bytes of a state file (checks 2–4 of the module doc; the
/// caller checks the size before reading and the key afterwards).
fn decode(data: Bytes, max_body: usize) -> Result<SavedDocument, LoadProblem> {
    let Some(newline) = data
        .iter()
        .take(MAX_HEADER_LEN + 1)
        .position(|&b| b == b'\n')
    else {
        let head = &data[..data.len().min(MAGIC.len())];
        if !MAGIC.starts_with(head) {
            return Err(LoadProblem::NotAStateFile);
        }
        if data.len() <= MAX_HEADER_LEN {
            return Err(LoadProblem::Truncated {
                expected: None,
                found: data.len() as u64,
            });
        }
        return Err(corrupt(format!(
            "the header line is longer than {MAX_HEADER_LEN} bytes"
        )));
    };
    let line = &data[..newline];
    if !line.starts_with(MAGIC) {
        return Err(LoadProblem::NotAStateFile);
    }
    let probe: FormatProbe = serde_json::from_slice(line)
        .map_err(|e| corrupt(format!("the header is not valid JSON: {e}")))?;
    let version = probe
        .format
        .strip_prefix(FORMAT_PREFIX)
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| corrupt(format!("unknown format {:?}", probe.format)))?;
    if version != FORMAT_VERSION && version != 1 {
        return Err(LoadProblem::UnsupportedVersion(version));
    }
    let header: HeaderIn =
        serde_json::from_slice(line).map_err(|e| corrupt(format!("bad header: {e}")))?;
    if header.format != FORMAT && header.format != FORMAT_V1 {
        // e.g. "…/state/01": the same number, not the same spelling.
        return Err(corrupt(format!("unknown format {:?}", header.format)));
    }
    let tail_at = line
        .len()
        .checked_sub(CHECKSUM_TAIL_LEN)
        .ok_or_else(|| corrupt("the header does not end with its checksum"))?;
    let (prefix, tail) = line.split_at(tail_at);
    let expected_tail = format!("{SHA256_FIELD}{}\"}}", header.sha256);
    if tail != expected_tail.as_bytes()
        || header.sha256.len() != 64
        || !header
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(corrupt("the header does not end with its checksum"));
    }
    if header.fetched_at_unix_ms > MAX_UNIX_MS {
        return Err(corrupt("fetched_at_unix_ms is after the year 9999"));
    }
    if [
        Some(header.upstream_age_ms),
        Some(header.lifetime_ms),
        header.advertised_ms,
        header.stale_if_error_until_ms,
    ]
    .into_iter()
    .flatten()
    .any(|ms| ms > MAX_DURATION_MS)
    {
        return Err(corrupt(
            "a duration (upstream_age_ms, lifetime_ms, ...) is over 2^31 seconds",
        ));
    }
    let fetched_at = UNIX_EPOCH
        .checked_add(Duration::from_millis(header.fetched_at_unix_ms))
        .ok_or_else(|| corrupt("fetched_at_unix_ms is out of range"))?;
    if header.body_len > max_body as u64 {
        return Err(LoadProblem::TooLarge(header.body_len));
    }
    // Its own allocation, not a slice of the file buffer: a restored body
    // is served for a whole lifetime, and the header bytes around it would
    // stay resident with it (10,000 documents × a few hundred bytes).
    let body = Bytes::copy_from_slice(&data[newline + 1..]);
    let found = body.len() as u64;
    if found < header.body_len {
        return Err(LoadProblem::Truncated {
            expected: Some(header.body_len),
            found,
        });
    }
    if found > header.body_len {
        return Err(corrupt(format!(
            "the body has {found} bytes, {} more than its header declares",
            found - header.body_len
        )));
    }
    if checksum(prefix, &body) != header.sha256 {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(SavedDocument {
        key: header.key,
        issuer: header.issuer,
        upstream_url: header.upstream_url,
        fetched_at,
        upstream_age: Duration::from_millis(header.upstream_age_ms),
        lifetime: Duration::from_millis(header.lifetime_ms),
        advertised: Duration::from_millis(
            header
                .advertised_ms
                .unwrap_or(header.lifetime_ms)
                .min(header.lifetime_ms),
        ),
        stale_if_error_until: header.stale_if_error_until_ms.map(Duration::from_millis),
        cache_control: header.cache_control,
        expires: header.expires,
        etag: header.etag,
        last_modified: header.last_modified,
        body,
    })
}

/// Reads and checks the state file at `path`, whose name is `name`.
/// `Ok(None)`: no such file.
fn load_path(
    path: &Path,
    name: &str,
    max_body: usize,
) -> Result<Option<SavedDocument>, LoadProblem> {
    let io = |e: io::Error| LoadProblem::Io(e.to_string());
    // Checked before opening: opening a FIFO would block.
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(LoadProblem::Io("not a regular file".to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    }
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let cap = (max_body as u64).saturating_add(MAX_HEADER_LEN as u64 + 1);
    let len = file.metadata().map_err(io)?.len();
    if len > cap {
        return Err(LoadProblem::TooLarge(len));
    }
    // The file may grow between metadata() and read: never read past cap.
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(cap.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 > cap {
        return Err(LoadProblem::TooLarge(data.len() as u64));
    }
    let doc = decode(Bytes::from(data), max_body)?;
    // A member key's file of an earlier version is named by hash.
    if file_name_for(&doc.key) != name && hashed_file_name(&doc.key) != name {
        return Err(LoadProblem::ForeignKey);
    }
    Ok(Some(doc))
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl StateDir {
    /// Opens the state directory at `path`, creating it (and its parents)
    /// if missing, and deletes the temporary files an interrupted save left
    /// behind. A directory that is readable but not writable opens: loads
    /// work, saves fail (see [`StateDir::probe_writable`]).
    pub fn open(path: &Path) -> Result<Self, StateError> {
        if path.exists() && !path.is_dir() {
            return Err(StateError::NotADirectory(path.to_path_buf()));
        }
        fs::create_dir_all(path).map_err(io_error("create the state directory", path))?;
        if !path.is_dir() {
            return Err(StateError::NotADirectory(path.to_path_buf()));
        }
        let lock = Self::lock(path)?;
        let dir = Self {
            root: path.to_path_buf(),
            _lock: lock.map(Arc::new),
        };
        dir.remove_leftovers()?;
        Ok(dir)
    }

    /// Takes the directory's exclusive lock (a `flock` on [`LOCK_FILE`],
    /// released by the kernel when the process ends, SIGKILL included) and
    /// writes this process's id into it. Two gateways sharing a directory
    /// would delete each other's in-flight temporary files and overwrite
    /// each other's documents: the second one is refused. A directory
    /// where the lock file cannot be created (read-only) is not locked.
    fn lock(path: &Path) -> Result<Option<File>, StateError> {
        let lock_path = path.join(LOCK_FILE);
        let mut file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(path = %lock_path.display(), error = %e, "state dir lock file cannot be created: not locked");
                return Ok(None);
            }
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = (&file).take(64).read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "unknown pid".to_owned(),
                    pid => format!("pid {pid}"),
                };
                return Err(StateError::Locked {
                    path: path.to_path_buf(),
                    holder,
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_error("lock", &lock_path)(e));
            }
        }
        // Only informative (the lock is what counts): failures ignored.
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(Some(file))
    }

    fn remove_leftovers(&self) -> Result<(), StateError> {
        let entries =
            fs::read_dir(&self.root).map_err(io_error("list the state directory", &self.root))?;
        let mut removed = 0_usize;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_file() => {}
                _ => continue,
            }
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Not fatal: a read-only directory can still be loaded from.
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot remove leftover temporary state file"
                ),
            }
        }
        if removed > 0 {
            tracing::debug!(
                dir = %self.root.display(),
                removed,
                "removed temporary files of an interrupted save"
            );
        }
        Ok(())
    }

    /// Checks that files can be created, synced and removed here: creates,
    /// fsyncs and deletes a probe file.
    pub fn probe_writable(&self) -> Result<(), StateError> {
        let path = self.temp_path("probe");
        let mut file = create_new(&path).map_err(io_error("create a probe file", &path))?;
        let written = file
            .write_all(b"probe\n")
            .and_then(|()| file.sync_all())
            .map_err(io_error("write and fsync a probe file", &path));
        drop(file);
        let removed = fs::remove_file(&path).map_err(io_error("remove the probe file", &path));
        written?;
        removed?;
        self.sync_dir()
    }

    /// The directory's path, as given to [`StateDir::open`].
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Where the state file of `key` is (whether or not it exists).
    pub fn path_for(&self, key: &str) -> PathBuf {
        self.root.join(file_name_for(key))
    }

    /// Saves `doc` under its key, replacing any previous file atomically:
    /// temporary file in the same directory, fsync, rename over the target,
    /// fsync of the directory. On error the previous file (if any) is
    /// untouched and no temporary file is left behind (unless even its
    /// removal fails).
    pub fn save(&self, doc: &SavedDocument) -> Result<(), StateError> {
        let bytes = encode(doc)?;
        let target = self.path_for(&doc.key);
        let temp = self.temp_path("save");
        let result = write_synced(&temp, &bytes).and_then(|()| {
            fs::rename(&temp, &target).map_err(io_error("rename the temporary file over", &target))
        });
        if result.is_err() {
            // Best effort: the next open() removes it otherwise.
            let _ = fs::remove_file(&temp);
        }
        result?;
        self.sync_dir()
    }

    /// Deletes the state file of `key`; no file is not an error.
    pub fn remove(&self, key: &str) -> Result<(), StateError> {
        let path = self.path_for(key);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove the state file", &path)(e)),
        }
    }

    /// Loads the state file of `key`. `Ok(None)`: there is none.
    /// `max_body` is the largest body accepted (`--max-body-size`).
    pub fn load(&self, key: &str, max_body: usize) -> Result<Option<SavedDocument>, LoadProblem> {
        let name = file_name_for(key);
        let doc = load_path(&self.root.join(&name), &name, max_body)?;
        match doc {
            // Unreachable unless two keys share a 128-bit hash prefix.
            Some(doc) if doc.key != key => Err(LoadProblem::ForeignKey),
            other => Ok(other),
        }
    }

    /// Lists the member files of the groups tagged `tags` (see
    /// [`group_tag`]), one list per tag in the order given, from the
    /// directory's entries and their metadata alone: no file is opened.
    /// An entry whose metadata cannot be read is skipped.
    pub fn list_members(&self, tags: &[String]) -> io::Result<Vec<Vec<ListedMember>>> {
        let mut lists = vec![Vec::new(); tags.len()];
        for entry in fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let Some((tag, member)) = parse_member_file_name(name) else {
                continue;
            };
            let Some(i) = tags.iter().position(|t| t == tag) else {
                continue;
            };
            // One statx per file, for its type, size and time.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            lists[i].push(ListedMember {
                member: member.to_owned(),
                size: meta.len(),
                modified: meta.modified().unwrap_or(UNIX_EPOCH),
            });
        }
        Ok(lists)
    }

    /// The names of the member files whose group is not one of `tags`
    /// (a group no longer configured), from the directory's entries alone.
    pub fn foreign_members(&self, tags: &[String]) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if let Some((tag, _)) = parse_member_file_name(name) {
                if !tags.iter().any(|t| t == tag) {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    /// Deletes the state file named `name` (a file name from a listing,
    /// not a key); no file is not an error. A name with a `/`, starting
    /// with `.` or not ending in [`EXTENSION`] is refused.
    pub fn remove_name(&self, name: &str) -> Result<(), StateError> {
        if name.contains('/') || name.starts_with('.') || !name.ends_with(EXTENSION) {
            return Err(StateError::Unrepresentable {
                key: name.to_owned(),
                reason: "not the name of a state file",
            });
        }
        let path = self.root.join(name);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove the state file", &path)(e)),
        }
    }

    /// Loads every state file in the directory (names ending in
    /// [`EXTENSION`] and not starting with `.`; member files are listed,
    /// not read: [`StateDir::list_members`]), in file-name order. Files
    /// that fail a check are listed with their problem; other names
    /// (temporary files, a README, …) are skipped silently. If the
    /// directory itself cannot be listed, that is the one problem.
    pub fn load_all(&self, max_body: usize) -> (Vec<SavedDocument>, Vec<(PathBuf, LoadProblem)>) {
        self.load_all_but(max_body, &HashSet::new())
    }

    /// [`StateDir::load_all`] without reading the files named in `skip`
    /// (those of the configured documents, which their own restore reads
    /// one by one): with 10,000 configured documents and 100,000 tenants,
    /// a pass over the directory reads nothing.
    pub fn load_all_but(
        &self,
        max_body: usize,
        skip: &HashSet<String>,
    ) -> (Vec<SavedDocument>, Vec<(PathBuf, LoadProblem)>) {
        let mut docs = Vec::new();
        let mut problems = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) => {
                problems.push((self.root.clone(), LoadProblem::Io(e.to_string())));
                return (docs, problems);
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => {
                    if let Ok(name) = entry.file_name().into_string() {
                        if name.ends_with(EXTENSION)
                            && !name.starts_with('.')
                            && !skip.contains(&name)
                            && parse_member_file_name(&name).is_none()
                        {
                            names.push(name);
                        }
                    }
                }
                Err(e) => problems.push((self.root.clone(), LoadProblem::Io(e.to_string()))),
            }
        }
        names.sort_unstable();
        for name in names {
            let path = self.root.join(&name);
            match load_path(&path, &name, max_body) {
                Ok(Some(doc)) => docs.push(doc),
                // Deleted since it was listed.
                Ok(None) => {}
                Err(problem) => problems.push((path, problem)),
            }
        }
        (docs, problems)
    }

    fn temp_path(&self, purpose: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(format!("{TEMP_PREFIX}{purpose}-{}-{n}", std::process::id()))
    }

    fn sync_dir(&self) -> Result<(), StateError> {
        File::open(&self.root)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("fsync the state directory", &self.root))
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut file = create_new(path).map_err(io_error("create the temporary file", path))?;
    file.write_all(bytes)
        .map_err(io_error("write the temporary file", path))?;
    file.sync_all()
        .map_err(io_error("fsync the temporary file", path))
}
