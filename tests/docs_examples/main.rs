//! Docs that cannot rot: runs the examples of README.md and docs/*.md
//! against the real binary, the built-in demo authorization server and a
//! test upstream, and fails with `file:line` for every example that does
//! not work as written. The scheme (which blocks run, the markings, the
//! comparison rules) is documented in docs/development.md, "Examples in
//! the docs"; in short:
//!
//! - `sh` blocks: every command exits 0; a command that starts the gateway
//!   runs in the background until the block ends and must come up;
//! - `console` blocks: every `$ command` prints what follows it
//!   ([`compare`]);
//! - `toml` blocks: a config file that must parse, start and serve every
//!   document it lists, its upstreams redirected to the test upstream;
//! - `<!-- example: ... -->` on the line above a block: `skip (reason)`,
//!   `gateway ARGS`, `env NAME=VALUE`, `config above` ([`blocks`]).
//!
//! `harness = false`: this prints its summary (the count of examples and
//! of skip markings, which must stay under a fifth) even when it passes.

mod blocks;
mod compare;
mod session;
mod upstream;

use oauth_metadata_gateway::discovery::DocumentKind;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blocks::{Block, Kind};
use session::Session;
use upstream::TestUpstream;

/// The Markdown files whose examples run.
fn files(root: &Path) -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn main() {
    // `cargo test -- NAME`: run only the examples whose file:line contains it.
    // libtest's own options (`--nocapture`, `--test-threads 2`...) are
    // accepted and ignored.
    let mut filter: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if [
            "--test-threads",
            "--skip",
            "--format",
            "--color",
            "--logfile",
            "-Z",
        ]
        .contains(&arg.as_str())
        {
            args.next();
        } else if !arg.starts_with('-') {
            filter = Some(arg);
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if let Err(e) = compare::self_check() {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let upstream = TestUpstream::start().expect("start the test upstream");
    let mut failures = Vec::new();
    let mut all = Vec::new();
    for file in files(&root) {
        let text = std::fs::read_to_string(root.join(&file)).expect("read a Markdown file");
        let (examples, errors) = blocks::examples(&file, &text);
        all.extend(examples);
        failures.extend(errors);
    }
    let skipped: Vec<&Block> = all.iter().filter(|b| b.directives.skip.is_some()).collect();
    let mut configs: HashMap<String, (tempfile::TempDir, PathBuf)> = HashMap::new();
    let mut ran = 0;
    for block in &all {
        let name = block.at(block.line);
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        if block.directives.skip.is_some() {
            continue;
        }
        ran += 1;
        let result = match block.kind {
            Kind::Toml => run_toml(block, &upstream).map(|kept| {
                configs.insert(block.file.clone(), kept);
            }),
            Kind::Sh | Kind::Console => {
                let config = block
                    .directives
                    .config_above
                    .then(|| configs.get(&block.file).map(|(_, p)| p.clone()));
                run_commands(block, &upstream, config)
            }
        };
        match result {
            Ok(()) => println!("ok      {name} ({:?})", block.kind),
            Err(e) => {
                println!("FAILED  {name} ({:?})", block.kind);
                failures.push(e);
            }
        }
    }
    let total = all.len();
    println!();
    for b in &skipped {
        println!(
            "marked skip: {} ({})",
            b.at(b.line),
            b.directives.skip.as_deref().unwrap_or("")
        );
    }
    let limit = total / 5;
    println!(
        "docs examples: {total} in README.md and docs/, {ran} run, {} marked skip (at most {limit}, under a fifth)",
        skipped.len()
    );
    if skipped.len() * 5 >= total.max(1) {
        failures.push(format!(
            "{} of {total} examples are marked skip: at most a fifth may be; make some of them run (docs/development.md#examples-in-the-docs)",
            skipped.len()
        ));
    }
    if !failures.is_empty() {
        eprintln!();
        for f in &failures {
            eprintln!("error: {f}\n");
        }
        eprintln!("{} broken example(s) or marking(s)", failures.len());
        std::process::exit(1);
    }
}

/// One command of a `sh` or `console` block.
struct Cmd {
    line: usize,
    text: String,
    expected: Vec<String>,
}

fn commands(block: &Block) -> Result<Vec<Cmd>, String> {
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut continued = false;
    for (n, raw) in &block.lines {
        let line = raw.trim_end();
        if continued {
            let last = cmds.last_mut().expect("a command is being continued");
            last.text.push(' ');
            last.text.push_str(line.trim_start());
        } else if block.kind == Kind::Sh {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            cmds.push(Cmd {
                line: *n,
                text: t.to_string(),
                expected: Vec::new(),
            });
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            cmds.push(Cmd {
                line: *n,
                text: cmd.to_string(),
                expected: Vec::new(),
            });
        } else {
            match cmds.last_mut() {
                Some(c) => c.expected.push(line.to_string()),
                None => {
                    return Err(format!(
                        "{}: a console block starts with `$ command`, then the output it prints",
                        block.at(*n)
                    ))
                }
            }
            continue;
        }
        let last = cmds.last_mut().expect("just pushed");
        continued = last.text.ends_with('\\');
        if continued {
            last.text.pop();
        }
    }
    Ok(cmds)
}

/// Whether `cmd` starts the gateway (to run in the background): the
/// binary, after `NAME=VALUE` words, not `check`, not in a pipe or list.
fn starts_gateway(cmd: &str) -> bool {
    let c = cmd.trim().trim_end_matches('&').trim();
    if c.contains('|')
        || c.contains(';')
        || c.contains("&&")
        || c.contains("--help")
        || c.contains("--version")
    {
        return false;
    }
    let mut words = c
        .split_whitespace()
        .skip_while(|w| w.contains('=') && !w.starts_with('-'));
    words.next() == Some("oauth-metadata-gateway") && words.next() != Some("check")
}

/// The first ETag-looking token (`"` + 32 hex digits + `"`) in `s`.
fn etag_in(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(33)).find_map(|i| {
        let t = &s[i..i + 34];
        (b[i] == b'"' && b[i + 33] == b'"' && t[1..33].bytes().all(|c| c.is_ascii_hexdigit()))
            .then_some(t)
    })
}

fn run_commands(
    block: &Block,
    upstream: &TestUpstream,
    config: Option<Option<PathBuf>>,
) -> Result<(), String> {
    let mut s = Session::new(&upstream.base);
    let cmds = commands(block)?;
    let env: Vec<(String, String)> = block
        .directives
        .env
        .iter()
        .map(|(k, v)| (k.clone(), s.rewrite(v)))
        .collect();
    let rewritten: Vec<String> = cmds.iter().map(|c| s.rewrite(&c.text)).collect();
    if !rewritten.iter().any(|c| starts_gateway(c)) {
        let mut args: Vec<String> = match &block.directives.gateway {
            Some(a) => a.iter().map(|a| s.rewrite(a)).collect(),
            None if config.is_some() => Vec::new(),
            None => vec!["--demo".to_string()],
        };
        match config {
            Some(Some(path)) => args.extend(["--config".to_string(), path.display().to_string()]),
            Some(None) => {
                return Err(format!(
                    "{}: `config above` but no toml example above it in the file",
                    block.at(block.line)
                ))
            }
            None => {}
        }
        s.start_gateway(&args, &env).map_err(|e| {
            format!(
                "{}: the gateway for this example (marking `gateway {}`): {e}",
                block.at(block.line),
                args.join(" ")
            )
        })?;
    }
    for (cmd, line) in cmds.iter().zip(&rewritten) {
        let at = block.at(cmd.line);
        if starts_gateway(line) {
            s.start_command(line, &env)
                .map_err(|e| format!("{at}: `{}`: {e}", cmd.text))?;
            continue;
        }
        let mut line = line.clone();
        if let Some(doc_etag) = etag_in(&line).map(str::to_string) {
            // The ETag depends on the document's bytes, which name the
            // demo's port: use the one the gateway serves now.
            let r = s
                .get("/.well-known/oauth-authorization-server")
                .map_err(|e| format!("{at}: {e}"))?;
            let etag = r
                .header("etag")
                .ok_or_else(|| format!("{at}: the document has no ETag to use"))?;
            line = line.replace(&doc_etag, &etag);
        }
        let (status, out) = s
            .run(&line, &env)
            .map_err(|e| format!("{at}: `{}`: {e}", cmd.text))?;
        match block.kind {
            Kind::Sh if !status.success() => {
                return Err(format!(
                    "{at}: `{}` exited with {status}:\n{}\n  the gateway's log:\n{}",
                    cmd.text,
                    out.trim_end(),
                    s.last_log()
                ))
            }
            Kind::Console => {
                let expected: Vec<String> = cmd.expected.iter().map(|l| s.rewrite(l)).collect();
                compare::matches(&expected, &out).map_err(|e| {
                    format!(
                        "{at}: `{}`: {e}\n  the gateway's log:\n{}",
                        cmd.text,
                        s.last_log()
                    )
                })?;
            }
            _ => {}
        }
    }
    s.stop_all()
        .map_err(|e| format!("{}: {e}", block.at(block.line)))
}

/// A config-file example: rewritten so every upstream is the test upstream
/// (issuers unchanged; `state_dir` moved to a scratch directory), started,
/// and every document it lists fetched from the gateway. Returns the
/// rewritten file for `config above` examples below it.
fn run_toml(
    block: &Block,
    upstream: &TestUpstream,
) -> Result<(tempfile::TempDir, PathBuf), String> {
    let at = block.at(block.line);
    let mut table: toml::Table = block
        .text()
        .parse()
        .map_err(|e| format!("{at}: not a TOML file: {e}"))?;
    let keep = tempfile::tempdir().map_err(|e| e.to_string())?;
    if table.contains_key("state_dir") {
        table.insert(
            "state_dir".into(),
            keep.path().join("state").display().to_string().into(),
        );
    }
    if let Some(servers) = table
        .get_mut("authorization_server")
        .and_then(|v| v.as_array_mut())
    {
        for server in servers.iter_mut().filter_map(|s| s.as_table_mut()) {
            let issuer = server
                .get("issuer")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            let original = server
                .get("upstream")
                .and_then(|v| v.as_str())
                .unwrap_or(&issuer)
                .to_string();
            let path = original
                .split_once("://")
                .map_or("", |(_, r)| r.find('/').map_or("", |i| &r[i..]));
            let url = upstream.register(path, &issuer);
            server.insert("upstream".into(), url.into());
        }
    }
    let path = keep.path().join("gateway.toml");
    std::fs::write(&path, table.to_string()).map_err(|e| e.to_string())?;
    let mut s = Session::new(&upstream.base);
    let args = vec!["--config".to_string(), path.display().to_string()];
    s.start_gateway(&args, &[])
        .map_err(|e| format!("{at}: this config file: {e}"))?;
    s.wait_ready(Duration::from_secs(10)).map_err(|e| {
        format!(
            "{at}: this config file never made the gateway ready: {e}\n{}",
            s.last_log()
        )
    })?;
    let defaults = oauth_metadata_gateway::config::file::Defaults {
        ttl: Duration::from_secs(300),
        max_stale: Duration::from_secs(86400),
        template: oauth_metadata_gateway::config::TemplateLimits::default(),
        jwks_refetch_cooldown: oauth_metadata_gateway::config::DEFAULT_JWKS_REFETCH_COOLDOWN,
    };
    let docs = oauth_metadata_gateway::config::file::load(&path, defaults)
        .map_err(|e| format!("{at}: {e}"))?;
    // A key set is checked for the upstream's key ids (the test upstream
    // publishes the demo's set), a metadata document for its issuer.
    let demo_kid = || {
        let set: serde_json::Value =
            serde_json::from_str(oauth_metadata_gateway::demo::JWKS).unwrap_or_default();
        set["keys"][0]["kid"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut checks: Vec<(String, &str, String)> = Vec::new();
    for d in &docs.documents {
        for route in d.routes.iter() {
            checks.push(match d.kind {
                DocumentKind::KeySet => (route.to_string(), "kid", demo_kid()),
                _ => (route.to_string(), "issuer", d.issuer.as_str().to_string()),
            });
        }
    }
    for t in &docs.templates {
        for route in &t.routes {
            checks.push(match t.kind {
                DocumentKind::KeySet => (route.render("acme"), "kid", demo_kid()),
                _ => (route.render("acme"), "issuer", t.issuer.render("acme")),
            });
        }
    }
    for p in &docs.protected_resources {
        let doc: serde_json::Value = serde_json::from_slice(&p.body).map_err(|e| e.to_string())?;
        let resource = doc["resource"].as_str().unwrap_or_default().to_string();
        for route in &p.routes {
            checks.push((route.clone(), "resource", resource.clone()));
        }
    }
    if checks.is_empty() {
        return Err(format!("{at}: this config file serves nothing"));
    }
    for (route, member, want) in checks {
        let r = s
            .get(&route)
            .map_err(|e| format!("{at}: GET {route}: {e}"))?;
        let mut got: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        if member == "kid" {
            got = got["keys"][0].take();
        }
        if r.status != 200 || got[member] != want.as_str() {
            return Err(format!(
                "{at}: GET {route} answered {} with {member} {}, expected 200 with {want:?}: {}\n{}",
                r.status, got[member], r.body, s.last_log()
            ));
        }
    }
    s.stop_all().map_err(|e| format!("{at}: {e}"))?;
    Ok((keep, path))
}
