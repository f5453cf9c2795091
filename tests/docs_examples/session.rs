//! Running one example: the ports it gets, the text rewritten to them, the
//! gateway processes it starts (stopped when it ends, however it ends) and
//! its shell commands under a time limit.
//!
//! Rewrites, applied to commands, expected output and markings alike:
//! `cargo run --release --` is the built binary `oauth-metadata-gateway`
//! (first on `PATH`); `127.0.0.1:8080` and `0.0.0.0:8080` the gateway's
//! port; `127.0.0.1:7788` and `localhost:7788` the demo's; `127.0.0.1:9901`
//! the admin listener's; `http://auth.internal:8080` the test upstream.
//! For HTTPS, `0.0.0.0:8443` is the gateway's port too,
//! `gateway.example.com:8443` resolves to it (curl's `resolve`, in a
//! `.curlrc` that also turns off the progress meter a terminal would not
//! show), and `/etc/gateway/` holds a certificate for it from a test CA
//! curl trusts. `GATEWAY_LISTEN` and `GATEWAY_DEMO_LISTEN` are set to the same ports, so
//! a command that names no address uses them too. `pidof
//! oauth-metadata-gateway` names the example's own gateway, never another
//! process on the machine.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `ca.pem`, and `cert.pem` (leaf first, then the CA) with `key.pem` for
/// `gateway.example.com` and `localhost`: what `/etc/gateway/` holds in the
/// HTTPS examples.
fn write_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: with rcgen's default name on both, OpenSSL (curl)
    // takes the leaf for a self-signed certificate.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "docs examples test CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec![
        "gateway.example.com".to_string(),
        "localhost".to_string(),
    ])
    .expect("leaf params");
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "gateway.example.com");
    let leaf = leaf.signed_by(&key, &ca).expect("leaf");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
    std::fs::write(dir.join("cert.pem"), format!("{}{}", leaf.pem(), ca.pem()))
        .expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key.pem");
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_oauth-metadata-gateway");

/// The longest one command may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One example's ports, scratch directory and processes.
pub struct Session {
    /// The gateway's port (for 8080).
    pub gw: u16,
    demo: u16,
    admin: u16,
    upstream: String,
    dir: tempfile::TempDir,
    servers: Vec<Server>,
}

/// A gateway the example started.
struct Server {
    child: Child,
    log: PathBuf,
    /// Where it was started, for errors.
    what: String,
}

impl Session {
    /// A session with fresh ports, using the test upstream at `upstream`.
    pub fn new(upstream: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        std::os::unix::fs::symlink(BIN, bin.join("oauth-metadata-gateway")).expect("symlink");
        let pidof = bin.join("pidof");
        std::fs::write(
            &pidof,
            format!(
                "#!/bin/sh\n# the example's own gateway, never another one on the machine\n[ \"$1\" = oauth-metadata-gateway ] && exec cat '{}'\nexec /usr/bin/pidof \"$@\"\n",
                dir.path().join("pids").display()
            ),
        )
        .expect("write pidof");
        std::fs::set_permissions(&pidof, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let gw = free_port();
        write_pki(dir.path());
        // curl as on a terminal (no progress meter on stderr), and the
        // example's TLS name resolved to its gateway, trusting its CA.
        std::fs::write(
            dir.path().join(".curlrc"),
            format!(
                "no-progress-meter\nresolve = \"gateway.example.com:{gw}:127.0.0.1\"\ncacert = \"{}\"\n",
                dir.path().join("ca.pem").display()
            ),
        )
        .expect("write .curlrc");
        Self {
            gw,
            demo: free_port(),
            admin: free_port(),
            upstream: upstream.to_string(),
            dir,
            servers: Vec::new(),
        }
    }

    /// `text` with the documented addresses replaced by this session's.
    pub fn rewrite(&self, text: &str) -> String {
        let gw = format!("127.0.0.1:{}", self.gw);
        text.replace("cargo run --release --", "oauth-metadata-gateway")
            .replace("0.0.0.0:8080", &gw)
            .replace("127.0.0.1:8080", &gw)
            .replace("127.0.0.1:7788", &format!("127.0.0.1:{}", self.demo))
            .replace("localhost:7788", &format!("localhost:{}", self.demo))
            .replace("127.0.0.1:9901", &format!("127.0.0.1:{}", self.admin))
            .replace("http://auth.internal:8080", &self.upstream)
            .replace("0.0.0.0:8443", &gw)
            .replace(
                "gateway.example.com:8443",
                &format!("gateway.example.com:{}", self.gw),
            )
            .replace("/etc/gateway/", &format!("{}/", self.dir.path().display()))
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars() {
            if k.starts_with("GATEWAY_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env(
            "PATH",
            format!("{}:{path}", self.dir.path().join("bin").display()),
        )
        .env("GATEWAY_LISTEN", format!("127.0.0.1:{}", self.gw))
        .env("GATEWAY_DEMO_LISTEN", format!("127.0.0.1:{}", self.demo))
        .env("NO_COLOR", "1")
        .env("CURL_HOME", self.dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
        cmd
    }

    /// Starts the gateway binary with `args` (already rewritten) and `env`,
    /// and waits until it is up (see [`Session::start_command`]).
    pub fn start_gateway(
        &mut self,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<(), String> {
        let mut cmd = self.command(BIN);
        cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        self.spawn(cmd, format!("oauth-metadata-gateway {}", args.join(" ")))
    }

    /// Starts the shell command `line` (a gateway invocation, possibly
    /// after `NAME=VALUE` words) in the background after stopping the
    /// gateways started before it (they hold the same port), and waits
    /// until its `/healthz` answers 200 and, for up to 3 s, its `/readyz`.
    pub fn start_command(&mut self, line: &str, env: &[(String, String)]) -> Result<(), String> {
        self.stop_all()?;
        let mut cmd = self.command("bash");
        // `exec`: the gateway is the child, so signals reach it.
        let (assignments, rest) = split_assignments(line.trim().trim_end_matches('&'));
        cmd.arg("-c")
            .arg(format!("exec {rest}"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .envs(assignments);
        self.spawn(cmd, line.to_string())
    }

    fn spawn(&mut self, mut cmd: Command, what: String) -> Result<(), String> {
        let log = self
            .dir
            .path()
            .join(format!("gateway-{}.log", self.servers.len()));
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let mut pids = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("pids"))
            .map_err(|e| e.to_string())?;
        write!(pids, "{} ", child.id()).map_err(|e| e.to_string())?;
        let tls = what.contains("--tls-cert");
        self.servers.push(Server { child, log, what });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .servers
                .last_mut()
                .and_then(|s| s.child.try_wait().ok().flatten())
            {
                return Err(format!(
                    "the gateway exited ({status}) instead of starting:\n{}",
                    self.last_log()
                ));
            }
            // Over TLS, listening is enough: the examples' own curl checks
            // the rest.
            let up = if tls {
                TcpStream::connect(("127.0.0.1", self.gw)).is_ok()
            } else {
                self.get("/healthz").is_ok_and(|r| r.status == 200)
            };
            if up {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the gateway never answered /healthz on 127.0.0.1:{} (an example's gateway listens on 127.0.0.1:8080):\n{}",
                    self.gw,
                    self.last_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !tls {
            self.wait_settled(Duration::from_secs(15));
        }
        Ok(())
    }

    /// Waits (bounded) until the gateway's first fetches are done: `/readyz`
    /// answers 200, or names a failure rather than a document not fetched
    /// yet (an example may show an upstream that is down). Examples then
    /// see a warm cache, as a user who started it a moment ago would.
    fn wait_settled(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.get("/readyz") {
                Ok(r) if r.status == 200 || !r.body.contains("not fetched yet") => return,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Waits (bounded) for `/readyz` to answer 200.
    pub fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.get("/readyz") {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) if Instant::now() > deadline => {
                    return Err(format!("/readyz answers {}: {}", r.status, r.body))
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The last started gateway's output.
    pub fn last_log(&self) -> String {
        let Some(s) = self.servers.last() else {
            return String::new();
        };
        let text = std::fs::read_to_string(&s.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(6)..];
        tail.iter().map(|l| format!("    | {l}\n")).collect()
    }

    /// Stops the gateways started so far (SIGTERM, then SIGKILL after
    /// 15 s); an error if one had exited by itself with a failure.
    pub fn stop_all(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        for mut s in self.servers.drain(..) {
            if let Ok(Some(status)) = s.child.try_wait() {
                if !status.success() && result.is_ok() {
                    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
                    result = Err(format!("`{}` exited with {status}:\n{log}", s.what));
                }
                continue;
            }
            let _ = Command::new("kill")
                .args(["-TERM", &s.child.id().to_string()])
                .status();
            if wait_timeout(&mut s.child, Duration::from_secs(15)).is_none() {
                let _ = s.child.kill();
                let _ = s.child.wait();
            }
        }
        let _ = std::fs::write(self.dir.path().join("pids"), "");
        result
    }

    /// Runs the shell command `line` (bounded in time) with `env`; its exit
    /// status and everything it printed, stdout and stderr interleaved as
    /// on a terminal.
    pub fn run(
        &self,
        line: &str,
        env: &[(String, String)],
    ) -> Result<(ExitStatus, String), String> {
        if line.contains(".ci/test") || line.contains(".ci/run") {
            return Err(
                "the examples never run .ci/test or .ci/run (they run them): mark the block `skip`"
                    .into(),
            );
        }
        let mut cmd = self.command("timeout");
        cmd.arg(COMMAND_LIMIT.as_secs().to_string())
            .args(["bash", "-c", &format!("exec 2>&1\n{line}")])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::null());
        let out = cmd.output().map_err(|e| format!("cannot run bash: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.code() == Some(124) {
            return Err(format!("did not finish within {COMMAND_LIMIT:?}:\n{text}"));
        }
        Ok((out.status, text))
    }

    /// GET `path` from the gateway (HTTP/1.0, bounded).
    pub fn get(&self, path: &str) -> Result<Reply, String> {
        get(&format!("127.0.0.1:{}", self.gw), path)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Leading `NAME=VALUE` words, and the rest of the command.
fn split_assignments(line: &str) -> (Vec<(String, String)>, String) {
    let mut vars = Vec::new();
    let mut rest = line.trim_start();
    while let Some((word, after)) = rest.split_once(char::is_whitespace) {
        match word.split_once('=') {
            Some((k, v))
                if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                vars.push((k.to_string(), v.trim_matches('"').to_string()));
                rest = after.trim_start();
            }
            _ => break,
        }
    }
    (vars, rest.to_string())
}

/// An HTTP answer.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// The head, lowercase names.
    pub head: String,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// GET `path` at `addr` with HTTP/1.0 (the answer ends at the close).
pub fn get(addr: &str, path: &str) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer from {addr}: {text:?}"))?;
    Ok(Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}
