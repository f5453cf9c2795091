//! Where the real binary logs and whether it colours: log lines on
//! standard error, nothing on standard output; ANSI colour codes only when
//! standard error is a terminal (here a pseudo-terminal from `script`,
//! util-linux), and never with `NO_COLOR` set.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_oauth-metadata-gateway");

/// The binary with `--demo` on free ports and `envs`, stopped with SIGTERM
/// once `gateway stopped` is due; its stdout and stderr.
fn run_briefly(envs: &[(&str, &str)]) -> (String, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let demo = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--demo",
        "--demo-listen",
        &demo,
        "--listen",
        &listen,
        "--workers",
        "1",
    ])
    .env_remove("NO_COLOR")
    .env("RUST_LOG", "info")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn the gateway");
    wait_listening(&listen);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait for the gateway");
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the gateway never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn logs_go_to_stderr_without_colour_when_piped() {
    let (stdout, stderr) = run_briefly(&[]);
    assert_eq!(
        stdout, "",
        "nothing but logs was printed, and not on stdout"
    );
    assert!(
        stderr.contains("gateway listening") && stderr.contains("gateway stopped"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes in a pipe:\n{stderr:?}"
    );
}

/// The binary's log on a pseudo-terminal (`script`), with `envs`.
fn on_a_terminal(envs: &[(&str, &str)]) -> String {
    let listen = format!("127.0.0.1:{}", free_port());
    let demo = format!("127.0.0.1:{}", free_port());
    // `script` runs the command on a new pty and copies what it prints;
    // the gateway gets SIGTERM from the shell once it has printed its first
    // lines, and `timeout` bounds the whole run.
    let inner = format!(
        "{BIN} --demo --demo-listen {demo} --listen {listen} --workers 1 & sleep 1.5; kill -TERM $!; wait $!"
    );
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "script", "-qec", &inner, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("gateway listening"), "{out:?}");
    text
}

#[test]
fn colour_on_a_terminal_unless_no_color() {
    assert!(
        on_a_terminal(&[]).contains("\u{1b}["),
        "a terminal gets colours"
    );
    let plain = on_a_terminal(&[("NO_COLOR", "1")]);
    assert!(
        !plain.contains("\u{1b}["),
        "NO_COLOR is honoured:\n{plain:?}"
    );
}
