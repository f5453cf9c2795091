//! Running the node scripts of tests/interop (real JavaScript libraries:
//! the MCP TypeScript SDK, jose) from a test: bounded in time, polled so
//! the test's own runtime keeps serving its upstream meanwhile. A missing
//! node or package fails with instructions (`.ci/install-deps.sh` runs
//! `npm ci` in tests/interop): it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// tests/interop.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Fails with instructions when node or `package` (under node_modules) is
/// missing.
pub fn require_node_package(package: &str) {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`node --version` failed ({}): install Node.js 18+ (run .ci/install-deps.sh)",
            out.status
        ),
        Err(e) => {
            panic!("node is not installed ({e}): install Node.js 18+; run .ci/install-deps.sh")
        }
    }
    let manifest = interop_dir().join(format!("node_modules/{package}/package.json"));
    assert!(
        manifest.is_file(),
        "{package} is not installed at {}: run .ci/install-deps.sh (it runs `npm ci` in tests/interop)",
        manifest.display()
    );
}

/// Runs `node tests/interop/<script> <args>` (killed after 60 s) and
/// returns its stdout parsed as JSON; a non-zero exit fails the test.
pub async fn run_json(script: &str, args: &[&str]) -> serde_json::Value {
    let mut child = Command::new("node")
        .arg(interop_dir().join(script))
        .args(args)
        .current_dir(interop_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let started = Instant::now();
    // Read the pipes on threads: a large output must not block the child.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node {script} did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    assert!(
        status.success(),
        "node {script} failed ({status}):\n{stderr}\n{stdout}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bad output ({e}): {stdout}\n{stderr}"))
}
