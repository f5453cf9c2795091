//! The binary's command line: bad flags and values are one clear line
//! naming the flag, exit code 2, and never a panic; environment variables
//! are read as `GATEWAY_<NAME>`.

use std::process::{Command, Output};

fn gateway(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oauth-metadata-gateway"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        // The proxy variables too: a machine behind a proxy still passes.
        if k.starts_with("GATEWAY_")
            || [
                "https_proxy",
                "HTTPS_PROXY",
                "http_proxy",
                "HTTP_PROXY",
                "all_proxy",
                "ALL_PROXY",
                "no_proxy",
                "NO_PROXY",
            ]
            .contains(&k.as_str())
        {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the binary")
}

fn assert_usage_error(out: &Output, flag: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code for {flag}: {stderr}");
    let first = stderr.lines().next().unwrap_or("");
    assert!(first.starts_with("error:"), "{stderr}");
    assert!(first.contains(flag), "first line names {flag}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_values_exit_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--ttl", "forever"], "--ttl"),
        (&["--ttl", "0s"], "--ttl"),
        (&["--max-stale=-5s"], "--max-stale"),
        (&["--upstream-timeout", "5 parsecs"], "--upstream-timeout"),
        (&["--listen", "localhost"], "--listen"),
        (&["--listen", "127.0.0.1:99999"], "--listen"),
        (&["--upstream", "localhost:7788"], "--upstream"),
        (&["--upstream", "http://"], "--upstream"),
        (&["--issuer", "https://as.example.com#frag"], "--issuer"),
        (&["--max-body-size", "lots"], "--max-body-size"),
        (&["--workers", "zero"], "--workers"),
        (
            &["--upstream-ca", "/definitely/not/here.pem"],
            "--upstream-ca",
        ),
        (&["--log-format", "xml"], "--log-format"),
        (&["--ttl", "3651d"], "--ttl"),
        (&["--max-stale", "100000000y"], "--max-stale"),
        (
            &[
                "--listen",
                "127.0.0.1:8080",
                "--admin-listen",
                "127.0.0.1:8080",
            ],
            "--admin-listen",
        ),
        (&["--admin-listen", "loopback"], "--admin-listen"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (args, flag) in cases {
        assert_usage_error(&gateway(args, &[]), flag);
    }
}

#[test]
fn bad_environment_values_name_the_flag() {
    let out = gateway(&[], &[("GATEWAY_TTL", "soon")]);
    assert_usage_error(&out, "--ttl");
}

#[test]
fn an_unparseable_ca_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("omg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let out = gateway(
        &[
            "--upstream",
            "https://as.example.com",
            "--upstream-ca",
            empty.to_str().unwrap(),
        ],
        &[],
    );
    assert_usage_error(&out, "--upstream-ca");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_and_version_exit_0() {
    let help = gateway(&["--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--upstream",
        "--issuer",
        "--ttl",
        "--max-stale",
        "--upstream-timeout",
        "--demo",
        "GATEWAY_TTL",
    ] {
        assert!(text.contains(flag), "--help mentions {flag}");
    }
    let version = gateway(&["--version"], &[]);
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}
