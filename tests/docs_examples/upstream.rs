//! The test upstream the examples' example hosts stand for: a small
//! HTTP/1.1 server on 127.0.0.1 (one thread per connection, one request
//! each, `Connection: close`) publishing the demo's realistic document
//! (`oauth_metadata_gateway::demo::document`) for whichever issuer is asked:
//!
//! - `/asN/...` paths belong to the N-th `[[authorization_server]]` of a
//!   rewritten config-file example: its issuer, with `{tenant}` filled in;
//! - any other path is `http://auth.internal:8080`, the internal address
//!   the docs give for `https://auth.example.com`: the document of issuer
//!   `https://auth.example.com<path>`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WELL_KNOWN: [&str; 2] = [
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
];

/// A registered issuer: the upstream path (after `/asN`) and the issuer,
/// either with `{tenant}` in one place.
#[derive(Clone)]
struct Mapping {
    prefix: String,
    path: String,
    issuer: String,
}

/// The running test upstream.
pub struct TestUpstream {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    mappings: Arc<Mutex<Vec<Mapping>>>,
}

impl TestUpstream {
    /// Starts it; it runs until the process exits.
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let base = format!("http://{}", listener.local_addr()?);
        let mappings: Arc<Mutex<Vec<Mapping>>> = Arc::default();
        let m = mappings.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let m = m.clone();
                std::thread::spawn(move || serve(stream, &m));
            }
        });
        Ok(Self { base, mappings })
    }

    /// Registers `issuer` (fetched at `upstream_path`, both possibly with
    /// `{tenant}`) and returns the upstream URL to configure instead.
    pub fn register(&self, upstream_path: &str, issuer: &str) -> String {
        let mut m = self.mappings.lock().unwrap();
        let prefix = format!("/as{}", m.len());
        m.push(Mapping {
            prefix: prefix.clone(),
            path: upstream_path.trim_end_matches('/').to_string(),
            issuer: issuer.trim_end_matches('/').to_string(),
        });
        format!("{}{prefix}{upstream_path}", self.base)
    }
}

fn serve(stream: TcpStream, mappings: &Mutex<Vec<Mapping>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // The rest of the head.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let (status, body) = match issuer_for(path, &mappings.lock().unwrap()) {
        Some(issuer) => ("200 OK", oauth_metadata_gateway::demo::document(&issuer)),
        // The demo document's `jwks_uri` is `{issuer}/oauth/jwks`.
        None if path.ends_with(oauth_metadata_gateway::demo::JWKS_PATH) => (
            "200 OK",
            oauth_metadata_gateway::demo::JWKS.as_bytes().to_vec(),
        ),
        None => ("404 Not Found", b"{\"error\":\"not_found\"}".to_vec()),
    };
    let mut out = &stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: max-age=300\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = out.write_all(&body);
}

/// The issuer whose document `path` asks for, if any.
fn issuer_for(path: &str, mappings: &[Mapping]) -> Option<String> {
    let suffix = WELL_KNOWN
        .iter()
        .find_map(|wk| path.strip_prefix(wk))
        .or_else(|| path.strip_suffix("/.well-known/openid-configuration"))?;
    for m in mappings {
        if let Some(rest) = suffix
            .strip_prefix(&m.prefix)
            .filter(|r| r.is_empty() || r.starts_with('/'))
        {
            return match m.path.split_once("{tenant}") {
                None => (rest == m.path).then(|| m.issuer.clone()),
                Some((before, after)) => {
                    let tenant = rest.strip_prefix(before)?.strip_suffix(after)?;
                    (!tenant.is_empty() && !tenant.contains('/'))
                        .then(|| m.issuer.replace("{tenant}", tenant))
                }
            };
        }
    }
    Some(format!("https://auth.example.com{suffix}"))
}
