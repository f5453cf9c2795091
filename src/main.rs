//! Binary entry point: parse the command line; `check` runs the metadata
//! check and exits 0/1; otherwise validate the configuration, set up
//! logging (on stderr, see [`logging`]), bind the listener and hand over to
//! [`oauth_metadata_gateway::run`] until SIGINT or SIGTERM; SIGHUP reloads
//! the `--config` file and the listener certificate (`--tls-cert`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use oauth_metadata_gateway::check::CheckArgs;
use oauth_metadata_gateway::cli::Command;
use oauth_metadata_gateway::logging;
use oauth_metadata_gateway::{run, Cli, Listeners};

/// mimalloc instead of the system allocator. With glibc's malloc the
/// resident memory of a gateway holding 10,000 documents depended on
/// allocation history: per-thread arenas, and a mmap threshold that rises
/// after the config parser frees its large token buffers, left 9–11 MiB
/// free but resident inside the heap, varying by ±2 MiB from run to run.
/// mimalloc (2.x, no transparent huge pages: see Cargo.toml) gave the same
/// peak within 0.4 MiB on every run, 4–6 MiB lower (benches/README.md,
/// "Many tenants").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(Command::Check(args)) = cli.command.take() {
        return check(&args);
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    // SIGHUP's default action ends the process: take it over before the
    // config file is read (10,000 issuers take a while to parse), so a
    // `systemctl reload` during start-up is a reload, not a kill.
    let reloads = {
        let _in_runtime = runtime.enter();
        reload_signals()
    };
    // The demo's socket first: with `--demo-listen 127.0.0.1:0` the port it
    // gets is the upstream the configuration is built with.
    let demo = bind_demo(&mut cli);
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(err) => err.exit(),
    };
    logging::init(config.log_format);
    let reloads = reloads.unwrap_or_else(|e| {
        tracing::warn!("cannot listen for SIGHUP, reload is off: {e}");
        tokio::sync::mpsc::unbounded_channel().1
    });
    runtime.block_on(async move {
        let public = match std::net::TcpListener::bind(config.listen) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        let admin = match config.admin_listen.map(std::net::TcpListener::bind) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => {
                tracing::error!(
                    "cannot listen on the admin address {}: {e}",
                    config
                        .admin_listen
                        .map(|a| a.to_string())
                        .unwrap_or_default()
                );
                return ExitCode::FAILURE;
            }
        };
        let listeners = Listeners {
            public,
            admin,
            demo,
        };
        match run(config, listeners, shutdown_signal(), reloads).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

/// `check ISSUER`: the report on stdout, exit status 0 when it passed.
fn check(args: &CheckArgs) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let env = oauth_metadata_gateway::cli::process_proxy_env();
    let report = runtime.block_on(oauth_metadata_gateway::check::run(args, &env));
    println!("{report}");
    if report.passed(args.strict) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// With `--demo`, binds the demo server's address and records the address
/// it got in `cli.demo_listen`; `None` when it cannot (the address is in
/// use: [`run`] then says so and names what answers there).
fn bind_demo(cli: &mut Cli) -> Option<std::net::TcpListener> {
    if !cli.demo {
        return None;
    }
    let listener = std::net::TcpListener::bind(cli.demo_listen).ok()?;
    if let Ok(addr) = listener.local_addr() {
        cli.demo_listen = addr;
    }
    Some(listener)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// One message per SIGHUP: reload the `--config` file and the listener
/// certificate. Call inside the runtime (it spawns the task that forwards
/// the signals).
fn reload_signals() -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<()>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    Ok(rx)
}
