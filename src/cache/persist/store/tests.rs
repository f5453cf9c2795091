//! Tests of the state store: round trips, atomic replacement, every kind of
//! damaged file (never loaded, never a panic), directory handling, and
//! properties over arbitrary and mutated file contents.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use proptest::prelude::*;
use tempfile::TempDir;

use super::*;

const MAX_BODY: usize = 256 * 1024;

fn doc(key: &str, body: &[u8]) -> SavedDocument {
    SavedDocument {
        key: key.to_owned(),
        issuer: "https://as.example.com/tenant1".to_owned(),
        upstream_url: "https://as.example.com/.well-known/oauth-authorization-server/tenant1"
            .to_owned(),
        fetched_at: UNIX_EPOCH + Duration::from_millis(1_764_700_000_123),
        upstream_age: Duration::from_millis(42_000),
        lifetime: Duration::from_millis(300_000),
        advertised: Duration::from_millis(120_000),
        stale_if_error_until: Some(Duration::from_millis(3_720_000)),
        cache_control: Some("public, max-age=162, stale-if-error=3600".to_owned()),
        expires: None,
        etag: Some("\"v1-abc\"".to_owned()),
        last_modified: Some("Tue, 02 Dec 2025 17:01:00 GMT".to_owned()),
        body: Bytes::copy_from_slice(body),
    }
}

fn json_body() -> Vec<u8> {
    br#"{"issuer":"https://as.example.com/tenant1","response_types_supported":["code"]}"#.to_vec()
}

fn store() -> (TempDir, StateDir) {
    let tmp = TempDir::new().expect("temp dir");
    let dir = StateDir::open(&tmp.path().join("state")).expect("open");
    (tmp, dir)
}

/// Names in the directory, sorted.
/// The names in the directory, but the lock file.
fn names(dir: &StateDir) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| n != LOCK_FILE)
        .collect();
    names.sort();
    names
}

/// The bytes of a file with a correct checksum over `header_prefix` (a
/// header line without its closing `,"sha256":"…"}`) and `body`.
fn forge(header_prefix: &str, body: &[u8]) -> Vec<u8> {
    let sum = checksum(header_prefix.as_bytes(), body);
    let mut out = format!("{header_prefix}{SHA256_FIELD}{sum}\"}}\n").into_bytes();
    out.extend_from_slice(body);
    out
}

fn header_prefix(
    format: &str,
    key: &str,
    fetched_at_ms: u64,
    lifetime_ms: u64,
    body_len: usize,
) -> String {
    format!(
        "{{\"format\":\"{format}\",\"key\":\"{key}\",\"issuer\":\"https://as.example.com\",\
         \"upstream_url\":\"https://as.example.com/.well-known/oauth-authorization-server\",\
         \"fetched_at_unix_ms\":{fetched_at_ms},\"upstream_age_ms\":0,\"lifetime_ms\":{lifetime_ms},\
         \"etag\":null,\"last_modified\":null,\"body_len\":{body_len}"
    )
}

#[test]
fn round_trip_keeps_every_field() {
    let (_tmp, dir) = store();
    let binary: Vec<u8> = (0..=255u8).chain([b'\n', b'\r', 0, b'"', b'\\']).collect();
    let mut without_validators = doc(
        "oauth-authorization-server/tenänt/日本\n\"quoted\"",
        &binary,
    );
    without_validators.etag = None;
    without_validators.last_modified = None;
    let cases = [
        doc("oauth-authorization-server/tenant1", &json_body()),
        without_validators,
        doc("", b""),
    ];
    for saved in &cases {
        dir.save(saved).expect("save");
        let loaded = dir
            .load(&saved.key, MAX_BODY)
            .expect("load")
            .expect("present");
        assert_eq!(&loaded, saved);
        assert_eq!(loaded.body, saved.body, "body bytes unchanged");
    }
    let (all, problems) = dir.load_all(MAX_BODY);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(all.len(), cases.len());
    for saved in &cases {
        assert!(all.contains(saved));
    }
    // Skipping files by name: the others only.
    let skip = std::iter::once(file_name_for(&cases[0].key)).collect();
    let (rest, problems) = dir.load_all_but(MAX_BODY, &skip);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rest.len(), cases.len() - 1);
    assert!(!rest.contains(&cases[0]));
}

#[test]
fn times_are_kept_to_the_millisecond() {
    let (_tmp, dir) = store();
    let mut saved = doc("k", b"{}");
    saved.fetched_at = UNIX_EPOCH + Duration::new(1_764_700_000, 123_456_789);
    saved.upstream_age = Duration::new(5, 999_999);
    saved.lifetime = Duration::new(300, 1_500_000);
    dir.save(&saved).expect("save");
    let loaded = dir.load("k", MAX_BODY).expect("load").expect("present");
    assert_eq!(
        loaded.fetched_at,
        UNIX_EPOCH + Duration::new(1_764_700_000, 123_000_000)
    );
    assert_eq!(loaded.upstream_age, Duration::from_secs(5));
    assert_eq!(loaded.lifetime, Duration::from_millis(300_001));
}

#[test]
fn file_names_are_fixed_length_hex() {
    for key in [
        "",
        "a",
        "oauth-authorization-server/tenant1",
        "../../etc/passwd",
        "日本\0/\\",
    ] {
        let name = file_name_for(key);
        let stem = name.strip_suffix(EXTENSION).expect("extension");
        assert_eq!(stem.len(), 32, "{name}");
        assert!(stem
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
    assert_ne!(file_name_for("a"), file_name_for("b"));
}

#[test]
fn save_replaces_and_leaves_no_temporary_file() {
    let (_tmp, dir) = store();
    dir.save(&doc("k", b"{\"first\":1}")).expect("save");
    dir.save(&doc("k", b"{\"second\":2, \"longer\": true}"))
        .expect("save");
    let loaded = dir.load("k", MAX_BODY).expect("load").expect("present");
    assert_eq!(&loaded.body[..], b"{\"second\":2, \"longer\": true}");
    assert_eq!(names(&dir), vec![file_name_for("k")]);
}

#[test]
fn a_reader_never_sees_a_partial_save() {
    let (_tmp, dir) = store();
    let small = doc("k", b"{\"v\":\"small\"}");
    let large = doc("k", &[b'x'; 64 * 1024]);
    dir.save(&small).expect("save");
    let dir = Arc::new(dir);
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (dir, done, small, large) = (dir.clone(), done.clone(), small.clone(), large.clone());
        thread::spawn(move || {
            let mut reads = 0_u32;
            while !done.load(Ordering::Relaxed) || reads == 0 {
                let loaded = dir.load("k", MAX_BODY).expect("every read is a whole file");
                let loaded = loaded.expect("the file never disappears");
                assert!(loaded == small || loaded == large, "a mixture was read");
                reads += 1;
            }
            reads
        })
    };
    for i in 0..60 {
        dir.save(if i % 2 == 0 { &large } else { &small })
            .expect("save");
    }
    done.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader did not panic");
    assert!(reads > 0);
    assert_eq!(names(&dir), vec![file_name_for("k")]);
}

#[test]
fn a_truncated_file_is_never_loaded() {
    let (_tmp, dir) = store();
    let saved = doc("oauth-authorization-server/tenant1", &json_body());
    dir.save(&saved).expect("save");
    let path = dir.path_for(&saved.key);
    let full = fs::read(&path).expect("read");
    let header_end = full.iter().position(|&b| b == b'\n').expect("newline");
    for cut in 0..full.len() {
        fs::write(&path, &full[..cut]).expect("write");
        let problem = dir
            .load(&saved.key, MAX_BODY)
            .expect_err("truncated file loaded");
        match problem {
            LoadProblem::Truncated {
                expected: None,
                found,
            } => {
                assert!(cut <= header_end, "cut {cut}");
                assert_eq!(found, cut as u64);
            }
            LoadProblem::Truncated {
                expected: Some(expected),
                found,
            } => {
                assert!(cut > header_end, "cut {cut}");
                assert_eq!(expected, saved.body.len() as u64);
                assert_eq!(found, (cut - header_end - 1) as u64);
            }
            LoadProblem::NotAStateFile | LoadProblem::Corrupt(_) => {}
            other => panic!("cut {cut}: unexpected {other:?}"),
        }
    }
    // A file cut inside the header (after the magic) is reported as truncated.
    fs::write(&path, &full[..header_end / 2]).expect("write");
    assert_eq!(
        dir.load(&saved.key, MAX_BODY),
        Err(LoadProblem::Truncated {
            expected: None,
            found: (header_end / 2) as u64
        })
    );
}

#[test]
fn any_flipped_byte_is_detected() {
    let (_tmp, dir) = store();
    let saved = doc("k", &json_body());
    dir.save(&saved).expect("save");
    let path = dir.path_for("k");
    let full = fs::read(&path).expect("read");
    let header_end = full.iter().position(|&b| b == b'\n').expect("newline");

    // One flipped bit in the body: corrupt.
    let mut flipped = full.clone();
    flipped[header_end + 10] ^= 0x01;
    fs::write(&path, &flipped).expect("write");
    assert!(matches!(
        dir.load("k", MAX_BODY),
        Err(LoadProblem::Corrupt(_))
    ));

    // In a header value (the ETag) too: the checksum covers the header.
    let etag_at = full
        .windows(6)
        .position(|w| w == b"v1-abc")
        .expect("etag in header");
    let mut flipped = full.clone();
    flipped[etag_at] = b'w';
    fs::write(&path, &flipped).expect("write");
    assert_eq!(
        dir.load("k", MAX_BODY),
        Err(LoadProblem::Corrupt("checksum mismatch".to_owned()))
    );

    // Anywhere: never loaded.
    for i in 0..full.len() {
        let mut flipped = full.clone();
        flipped[i] ^= 0x01;
        fs::write(&path, &flipped).expect("write");
        assert!(dir.load("k", MAX_BODY).is_err(), "flip at {i} loaded");
    }
}

#[test]
fn a_file_under_another_keys_name_is_foreign() {
    let (_tmp, dir) = store();
    dir.save(&doc("tenant-a", &json_body())).expect("save");
    fs::copy(dir.path_for("tenant-a"), dir.path_for("tenant-b")).expect("copy");
    assert_eq!(dir.load("tenant-b", MAX_BODY), Err(LoadProblem::ForeignKey));
    assert!(dir.load("tenant-a", MAX_BODY).expect("load").is_some());
    let (docs, problems) = dir.load_all(MAX_BODY);
    assert_eq!(docs.len(), 1);
    assert_eq!(
        problems,
        vec![(dir.path_for("tenant-b"), LoadProblem::ForeignKey)]
    );
}

#[test]
fn garbage_and_empty_files_are_problems() {
    let (_tmp, dir) = store();
    let path = dir.path_for("k");
    type Expect = fn(&LoadProblem) -> bool;
    let cases: [(&[u8], Expect); 7] = [
        (b"", |p| {
            *p == LoadProblem::Truncated {
                expected: None,
                found: 0,
            }
        }),
        (b"hello\nworld", |p| *p == LoadProblem::NotAStateFile),
        (b"\x00\xff\xfe garbage", |p| {
            *p == LoadProblem::NotAStateFile
        }),
        (b"{\"issuer\":\"https://as.example.com\"}\n", |p| {
            *p == LoadProblem::NotAStateFile
        }),
        (b"{\"format\":\"oauth-metadata-gateway/state/1\"\n", |p| {
            matches!(p, LoadProblem::Corrupt(_))
        }),
        (
            b"{\"format\":\"oauth-metadata-gateway/state/x\"}\n{}",
            |p| matches!(p, LoadProblem::Corrupt(_)),
        ),
        (
            b"{\"format\":\"oauth-metadata-gateway/state/1\"}\n{}",
            |p| matches!(p, LoadProblem::Corrupt(_)),
        ),
    ];
    for (bytes, expected) in cases {
        fs::write(&path, bytes).expect("write");
        let problem = dir.load("k", MAX_BODY).expect_err("garbage loaded");
        assert!(
            expected(&problem),
            "{:?}: {problem:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // A header line with no end in sight.
    let mut long = MAGIC.to_vec();
    long.resize(MAX_HEADER_LEN + 10, b'a');
    fs::write(&path, &long).expect("write");
    assert!(matches!(
        dir.load("k", MAX_BODY),
        Err(LoadProblem::Corrupt(_))
    ));
}

#[test]
fn another_format_version_is_unsupported() {
    let (_tmp, dir) = store();
    let body = b"{}";
    let file = forge(
        &header_prefix("oauth-metadata-gateway/state/3", "k", 0, 0, body.len()),
        body,
    );
    fs::write(dir.path_for("k"), file).expect("write");
    assert_eq!(
        dir.load("k", MAX_BODY),
        Err(LoadProblem::UnsupportedVersion(3))
    );
}

#[test]
fn a_version_1_file_is_still_read() {
    // Written by the build before format 2: no Cache-Control, Expires,
    // advertised freshness or stale-if-error end.
    let (_tmp, dir) = store();
    let body = b"{}";
    let file = forge(
        &header_prefix(FORMAT_V1, "k", 1_000, 300_000, body.len()),
        body,
    );
    fs::write(dir.path_for("k"), file).expect("write");
    let loaded = dir.load("k", MAX_BODY).expect("load").expect("present");
    assert_eq!(loaded.lifetime, Duration::from_secs(300));
    assert_eq!(loaded.advertised, loaded.lifetime, "v1: told what it held");
    assert_eq!(loaded.stale_if_error_until, None);
    assert_eq!((loaded.cache_control, loaded.expires), (None, None));
    assert_eq!(&loaded.body[..], body);
}

#[test]
fn absurd_times_are_corrupt() {
    let (_tmp, dir) = store();
    let body = b"{}";
    // A well-formed file with a correct checksum is accepted ...
    let ok = forge(
        &header_prefix(FORMAT, "k", 1_000, 300_000, body.len()),
        body,
    );
    fs::write(dir.path_for("k"), ok).expect("write");
    let loaded = dir.load("k", MAX_BODY).expect("load").expect("present");
    assert_eq!(loaded.fetched_at, UNIX_EPOCH + Duration::from_secs(1));
    assert_eq!(loaded.etag, None);
    // ... but not with a time after the year 9999 or an endless lifetime.
    for (at, lifetime) in [
        (MAX_UNIX_MS + 1, 0),
        (u64::MAX, 0),
        (0, MAX_DURATION_MS + 1),
        (0, u64::MAX),
    ] {
        let file = forge(&header_prefix(FORMAT, "k", at, lifetime, body.len()), body);
        fs::write(dir.path_for("k"), file).expect("write");
        assert!(
            matches!(dir.load("k", MAX_BODY), Err(LoadProblem::Corrupt(_))),
            "at={at} lifetime={lifetime}"
        );
    }
    // A negative number is not a u64.
    let file = forge(
        &header_prefix(FORMAT, "k", 0, 0, body.len()).replace(":0,", ":-5,"),
        body,
    );
    fs::write(dir.path_for("k"), file).expect("write");
    assert!(matches!(
        dir.load("k", MAX_BODY),
        Err(LoadProblem::Corrupt(_))
    ));
}

#[test]
fn unknown_header_members_are_corrupt() {
    let (_tmp, dir) = store();
    let body = b"{}";
    let prefix = header_prefix(FORMAT, "k", 0, 0, body.len()) + ",\"extra\":1";
    fs::write(dir.path_for("k"), forge(&prefix, body)).expect("write");
    assert!(matches!(
        dir.load("k", MAX_BODY),
        Err(LoadProblem::Corrupt(_))
    ));
}

#[test]
fn a_longer_body_than_declared_is_corrupt() {
    let (_tmp, dir) = store();
    dir.save(&doc("k", b"{}")).expect("save");
    let path = dir.path_for("k");
    let mut full = fs::read(&path).expect("read");
    full.push(b' ');
    fs::write(&path, full).expect("write");
    assert!(matches!(
        dir.load("k", MAX_BODY),
        Err(LoadProblem::Corrupt(_))
    ));
}

#[test]
fn oversized_files_are_too_large() {
    let (_tmp, dir) = store();
    let body = vec![b' '; 2048];
    dir.save(&doc("k", &body)).expect("save");
    // The declared body is over the limit.
    assert_eq!(dir.load("k", 1024), Err(LoadProblem::TooLarge(2048)));
    assert!(dir.load("k", 2048).expect("load").is_some());
    // The file is over max_body + the header cap: refused before parsing.
    let huge = vec![b'x'; 1024 + MAX_HEADER_LEN + 2];
    fs::write(dir.path_for("k"), &huge).expect("write");
    assert_eq!(
        dir.load("k", 1024),
        Err(LoadProblem::TooLarge(huge.len() as u64))
    );
}

#[test]
fn save_refuses_what_it_cannot_represent() {
    let (_tmp, dir) = store();
    let mut before_epoch = doc("k", b"{}");
    before_epoch.fetched_at = UNIX_EPOCH - Duration::from_secs(1);
    let mut endless = doc("k", b"{}");
    endless.lifetime = Duration::from_secs(u64::MAX);
    let huge_key = doc(&"k".repeat(MAX_HEADER_LEN), b"{}");
    for bad in [before_epoch, endless, huge_key] {
        assert!(matches!(
            dir.save(&bad),
            Err(StateError::Unrepresentable { .. })
        ));
    }
    assert!(names(&dir).is_empty(), "nothing written: {:?}", names(&dir));
}

#[test]
fn open_removes_leftover_temporary_files_only() {
    let tmp = TempDir::new().expect("temp dir");
    let root = tmp.path().join("state");
    let dir = StateDir::open(&root).expect("open");
    dir.save(&doc("k", b"{}")).expect("save");
    fs::write(root.join(format!("{TEMP_PREFIX}save-1234-0")), b"half a fi").expect("write");
    fs::write(root.join(format!("{TEMP_PREFIX}probe-1234-1")), b"probe").expect("write");
    fs::write(root.join("README"), b"operator notes").expect("write");
    // The first process ends (its lock goes with it); the next one opens.
    drop(dir);
    let dir = StateDir::open(&root).expect("reopen");
    let mut want = vec![file_name_for("k"), "README".to_owned()];
    want.sort();
    assert_eq!(names(&dir), want);
    assert!(dir.load("k", MAX_BODY).expect("load").is_some());
}

#[test]
fn a_directory_in_use_is_refused_until_its_holder_is_gone() {
    let tmp = TempDir::new().expect("temp dir");
    let root = tmp.path().join("state");
    let first = StateDir::open(&root).expect("open");
    let clone = first.clone();
    match StateDir::open(&root) {
        Err(StateError::Locked { holder, .. }) => {
            assert_eq!(holder, format!("pid {}", std::process::id()));
        }
        other => panic!("a second opener got {other:?}"),
    }
    drop(first);
    assert!(
        matches!(StateDir::open(&root), Err(StateError::Locked { .. })),
        "a clone still holds it"
    );
    drop(clone);
    StateDir::open(&root).expect("free again");
}

#[test]
fn open_creates_missing_parents_and_refuses_a_regular_file() {
    let tmp = TempDir::new().expect("temp dir");
    let nested = tmp.path().join("a/b/state");
    let dir = StateDir::open(&nested).expect("open");
    assert!(nested.is_dir());
    assert_eq!(dir.path(), nested);

    let file = tmp.path().join("file");
    fs::write(&file, b"x").expect("write");
    assert!(matches!(
        StateDir::open(&file),
        Err(StateError::NotADirectory(_))
    ));
    let below = file.join("state");
    let err = StateDir::open(&below).expect_err("below a regular file");
    assert!(
        err.to_string().contains(&below.display().to_string()),
        "{err}"
    );
}

#[test]
fn remove_deletes_and_tolerates_missing_files() {
    let (_tmp, dir) = store();
    dir.remove("never-saved").expect("missing is fine");
    dir.save(&doc("k", b"{}")).expect("save");
    dir.remove("k").expect("remove");
    assert_eq!(dir.load("k", MAX_BODY), Ok(None));
    assert!(names(&dir).is_empty());
}

#[test]
fn load_of_a_missing_key_is_none() {
    let (_tmp, dir) = store();
    assert_eq!(dir.load("nothing", MAX_BODY), Ok(None));
}

#[test]
fn a_directory_in_place_of_a_file_is_a_problem() {
    let (_tmp, dir) = store();
    fs::create_dir(dir.path_for("k")).expect("mkdir");
    assert!(matches!(dir.load("k", MAX_BODY), Err(LoadProblem::Io(_))));
}

#[test]
fn load_all_returns_good_files_and_lists_bad_ones() {
    let (_tmp, dir) = store();
    let good = [doc("a", &json_body()), doc("b", b"{}")];
    for d in &good {
        dir.save(d).expect("save");
    }
    let bad = dir.path_for("c");
    fs::write(&bad, b"not a state file").expect("write");
    let empty = dir.path().join(format!("deadbeef{EXTENSION}"));
    fs::write(&empty, b"").expect("write");
    // Skipped silently: other names, temporary files, hidden files.
    fs::write(dir.path().join("README.md"), b"notes").expect("write");
    fs::write(dir.path().join(format!("{TEMP_PREFIX}save-1-1")), b"x").expect("write");
    fs::write(dir.path().join(format!(".hidden{EXTENSION}")), b"x").expect("write");

    let (mut docs, mut problems) = dir.load_all(MAX_BODY);
    docs.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(docs, good.to_vec());
    problems.sort_by(|x, y| x.0.cmp(&y.0));
    let mut want = vec![
        (bad, LoadProblem::NotAStateFile),
        (
            empty,
            LoadProblem::Truncated {
                expected: None,
                found: 0,
            },
        ),
    ];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(problems, want);
}

#[test]
fn probe_writable_leaves_nothing_behind() {
    let (_tmp, dir) = store();
    dir.probe_writable().expect("writable");
    assert!(names(&dir).is_empty());
}

#[test]
fn problems_read_as_log_reasons() {
    assert_eq!(
        LoadProblem::Truncated {
            expected: Some(10),
            found: 3
        }
        .to_string(),
        "truncated: the body has 3 of 10 bytes"
    );
    assert_eq!(
        LoadProblem::Truncated {
            expected: None,
            found: 7
        }
        .to_string(),
        "truncated: the file ends inside the header, after 7 bytes"
    );
    assert_eq!(
        LoadProblem::UnsupportedVersion(3).to_string(),
        "unsupported state file format version 3 (this build reads 1 and 2)"
    );
}

// ---------------------------------------------------------------------------
// Properties

fn arb_doc() -> impl Strategy<Value = SavedDocument> {
    (
        ".{0,40}",
        ".{0,40}",
        proptest::option::of("[ -~]{0,20}"),
        proptest::option::of("[ -~]{0,30}"),
        0..=MAX_UNIX_MS,
        0..=MAX_DURATION_MS,
        0..=MAX_DURATION_MS,
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of("[ -~]{0,30}"),
        proptest::option::of(0..=MAX_DURATION_MS),
    )
        .prop_map(
            |(key, issuer, etag, last_modified, at, age, lifetime, body, cache_control, sie)| {
                SavedDocument {
                    key,
                    upstream_url: format!("{issuer}/.well-known/oauth-authorization-server"),
                    issuer,
                    fetched_at: UNIX_EPOCH + Duration::from_millis(at),
                    upstream_age: Duration::from_millis(age),
                    lifetime: Duration::from_millis(lifetime),
                    advertised: Duration::from_millis(lifetime / 2),
                    stale_if_error_until: sie.map(Duration::from_millis),
                    expires: cache_control.as_ref().map(|c| format!("x{c}")),
                    cache_control,
                    etag,
                    last_modified,
                    body: Bytes::from(body),
                }
            },
        )
}

/// A change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = bytes.len();
    match *m {
        Mutation::Flip { at, mask } => bytes[at % len] ^= mask,
        Mutation::Truncate { at } => bytes.truncate(at % len),
        Mutation::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
        Mutation::Remove { at } => {
            bytes.remove(at % len);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any saved document loads back equal.
    #[test]
    fn saved_documents_load_back_equal(saved in arb_doc()) {
        let (_tmp, dir) = store();
        dir.save(&saved).expect("save");
        prop_assert_eq!(dir.load(&saved.key, MAX_BODY), Ok(Some(saved)));
    }

    /// A damaged file is refused or, if the damage cancelled out, equal to
    /// what was saved: never a different document, never a panic.
    #[test]
    fn a_damaged_file_is_refused_or_unchanged(saved in arb_doc(), m in arb_mutation()) {
        let bytes = encode(&saved).expect("encode");
        let damaged = apply(bytes.clone(), &m);
        let (_tmp, dir) = store();
        fs::write(dir.path_for(&saved.key), &damaged).expect("write");
        match dir.load(&saved.key, MAX_BODY) {
            Ok(loaded) => {
                prop_assert_eq!(&damaged, &bytes, "damaged file loaded: {:?}", loaded);
                prop_assert_eq!(loaded, Some(saved));
            }
            Err(_) => prop_assert_ne!(&damaged, &bytes),
        }
    }

    /// Arbitrary bytes in a state file never panic; if they load at all,
    /// they are a document of that key that saves back to the same bytes.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(|tail| {
                let mut v = MAGIC.to_vec();
                v.extend(tail);
                v
            }),
        ],
        max_body in 0..600usize,
    ) {
        let (_tmp, dir) = store();
        fs::write(dir.path_for("k"), &bytes).expect("write");
        if let Ok(Some(loaded)) = dir.load("k", max_body) {
            prop_assert_eq!(&loaded.key, "k");
            prop_assert_eq!(encode(&loaded).expect("encode"), bytes);
        }
        let _ = dir.load_all(max_body);
    }
}

#[test]
fn member_keys_get_listable_names_and_others_stay_hashed() {
    let template = "oauth-authorization-server/realms/{tenant}";
    let key = format!("{template}@acme.1_x-Y");
    assert_eq!(member_parts(&key), Some((template, "acme.1_x-Y")));
    let name = file_name_for(&key);
    assert_eq!(
        name,
        format!("m-{}-acme.1_x-Y{EXTENSION}", group_tag(template))
    );
    assert_eq!(
        parse_member_file_name(&name),
        Some((&*group_tag(template), "acme.1_x-Y"))
    );
    // Not member keys: no `{` in the group, an unsafe or empty member.
    for other in [
        "oauth-authorization-server/x@acme".to_owned(),
        format!("{template}@.."),
        format!("{template}@a/b"),
        format!("{template}@"),
        format!("{template}@{}", "a".repeat(MAX_MEMBER_LEN + 1)),
        "oauth-authorization-server".to_owned(),
    ] {
        assert_eq!(member_parts(&other), None, "{other}");
        assert_eq!(file_name_for(&other), hashed_file_name(&other), "{other}");
    }
}

#[test]
fn members_are_listed_without_reading_and_foreign_ones_found() {
    let (_tmp, dir) = store();
    let ours = "oauth-authorization-server/realms/{tenant}";
    let theirs = "openid-configuration/realms/{tenant}";
    for (template, tenant) in [(ours, "a"), (ours, "b"), (theirs, "c")] {
        let key = format!("{template}@{tenant}");
        dir.save(&doc(&key, &json_body())).expect("save");
    }
    dir.save(&doc("configured", &json_body())).expect("save");
    // A member file that is not a state file at all: listed by name (it
    // is refused when read, like any damaged file).
    let junk = format!("m-{}-junk{EXTENSION}", group_tag(ours));
    fs::write(dir.path().join(&junk), b"not a state file").expect("write");

    let lists = dir.list_members(&[group_tag(ours)]).expect("list");
    let mut listed: Vec<&str> = lists[0].iter().map(|m| m.member.as_str()).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["a", "b", "junk"]);
    assert!(lists[0].iter().all(|m| m.size > 0));
    assert_eq!(
        dir.foreign_members(&[group_tag(ours)]).expect("list"),
        vec![file_name_for(&format!("{theirs}@c"))]
    );
    // load_all reads the hashed files only.
    let (docs, problems) = dir.load_all(MAX_BODY);
    assert_eq!(
        docs.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(),
        ["configured"]
    );
    assert!(problems.is_empty(), "{problems:?}");
    // A member loads by its key; the junk file is refused.
    let loaded = dir.load(&format!("{ours}@a"), MAX_BODY).expect("load");
    assert!(loaded.is_some());
    assert!(dir.load(&format!("{ours}@junk"), MAX_BODY).is_err());
    dir.remove_name(&junk).expect("remove");
    assert!(dir.remove_name("../x.json-doc").is_err());
    assert!(dir.remove_name(".lock").is_err());
    assert_eq!(
        dir.list_members(&[group_tag(ours)]).expect("list")[0].len(),
        2
    );
}

#[test]
fn a_tenant_file_under_its_earlier_hashed_name_still_loads() {
    let (_tmp, dir) = store();
    let key = "oauth-authorization-server/realms/{tenant}@acme";
    dir.save(&doc(key, &json_body())).expect("save");
    fs::rename(dir.path_for(key), dir.path().join(hashed_file_name(key))).expect("rename");
    let (docs, problems) = dir.load_all(MAX_BODY);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(docs[0].key, key);
}
