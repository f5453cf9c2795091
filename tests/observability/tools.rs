//! The external Prometheus tools the observability tests drive (`promtool`,
//! `prometheus`, both from the Debian package `prometheus`). A missing tool
//! fails the test with the command that installs it: these checks must never
//! pass by being skipped.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The path of tool `name` (overridable with the environment variable `env`,
/// e.g. `PROMTOOL=/opt/prometheus/promtool`), found on `PATH`.
pub fn find(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env}={} is not a file; unset it or point it at `{name}`",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH. Run .ci/install-deps.sh (it installs the Debian \
                 package `prometheus`, which provides promtool and prometheus), or set {env}."
            )
        })
}

/// What `promtool check metrics` said about an exposition.
#[derive(Debug)]
pub struct PromtoolVerdict {
    pub success: bool,
    pub output: String,
}

/// Runs `promtool check metrics` with `exposition` on stdin.
pub fn promtool_check_metrics(exposition: &[u8]) -> PromtoolVerdict {
    let promtool = find("promtool", "PROMTOOL");
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    // promtool reads all of stdin before it writes, so writing first and
    // then collecting the output cannot deadlock.
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(exposition)
        .expect("write the exposition to promtool");
    let out = child.wait_with_output().expect("promtool output");
    PromtoolVerdict {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_string(),
    }
}
