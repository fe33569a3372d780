//! `tidegate-agent`: parses arguments, sets up logging and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tidegate_agent::clock::SystemClock;
use tidegate_agent::collect::Collector;
use tidegate_agent::config::{Config, DEFAULT_CONFIG_TOML};
use tidegate_agent::local;

#[derive(Parser)]
#[command(
    name = "tidegate-agent",
    version,
    about = "Reports this host's patch state to a tidegate server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent daemon.
    Run {
        /// Configuration file (TOML). Without it, the built-in defaults apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the default configuration file, with a comment on every key.
    PrintDefaultConfig,
    /// Collect the inventory once and print it as JSON.
    Inventory {
        /// Directory to read below, "/" for this host.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Show what each step of a bundle would change below ROOT, changing nothing. The bundle's
    /// signatures are not checked.
    Plan {
        /// The bundle file
        #[arg(value_name = "BUNDLE_FILE")]
        bundle: PathBuf,
        /// Directory the steps work below, "/" for this host
        #[arg(long)]
        root: PathBuf,
    },
    /// Verify a bundle against the trust root pinned in STATE_DIR and apply it below ROOT at once,
    /// with the journal in STATE_DIR, as the daemon does with a bundle it receives
    Apply {
        /// The bundle file
        #[arg(value_name = "BUNDLE_FILE")]
        bundle: PathBuf,
        /// Directory the steps work below, "/" for this host
        #[arg(long)]
        root: PathBuf,
        /// The agent's state directory (trust state and journal)
        #[arg(long)]
        state_dir: PathBuf,
        /// A signed trust root to pin when STATE_DIR has none yet
        #[arg(long, value_name = "ROOT_FILE")]
        trust_root: Option<PathBuf>,
        /// The tier whose signature threshold and command permission apply
        #[arg(long, default_value = "default")]
        tier: String,
    },
    /// Revert an applied bundle from the journal in STATE_DIR
    Rollback {
        /// The bundle hash, 64 hex digits, as `apply` prints it
        #[arg(value_name = "BUNDLE_HASH")]
        bundle_hash: String,
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Finish or revert what the journal in STATE_DIR shows interrupted, as the daemon does at
    /// start-up, and print each outcome
    Recover {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Print the bundle states and steps the journal in STATE_DIR records
    Journal {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Print the encoded size of a full report and of a one-package delta of the inventory below
    /// ROOT, for the benchmark script.
    BenchWire {
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::Inventory { root } => {
            if !root.is_dir() {
                eprintln!(
                    "error: root {} is not a directory; give --root / for this host",
                    root.display()
                );
                return ExitCode::from(2);
            }
            let inventory = Collector::new(root).collect();
            match serde_json::to_string_pretty(&inventory) {
                Ok(json) => print_stdout(&format!("{json}\n")),
                Err(error) => {
                    eprintln!("error: cannot print the inventory as JSON: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::BenchWire { root } => match tidegate_agent::reporter::wire_sizes(&root) {
            Ok((full, delta)) => print_stdout(&format!(
                "full_report_bytes {full}\ndelta_one_change_bytes {delta}\n"
            )),
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => run(config),
        Command::Plan { bundle, root } => print_local(local::plan(&bundle, &root)),
        Command::Apply {
            bundle,
            root,
            state_dir,
            trust_root,
            tier,
        } => {
            init_logging();
            print_local(local::apply(
                &bundle,
                &root,
                &state_dir,
                trust_root.as_deref(),
                &tier,
            ))
        }
        Command::Rollback {
            bundle_hash,
            root,
            state_dir,
        } => {
            init_logging();
            print_local(local::rollback(&bundle_hash, &root, &state_dir))
        }
        Command::Recover { root, state_dir } => {
            init_logging();
            print_local(local::recover(&root, &state_dir))
        }
        Command::Journal { state_dir } => print_local(local::journal(&state_dir)),
    }
}

/// Writes to stdout; a reader that closed the pipe early (`| head`) is not an error.
fn print_stdout(text: &str) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write to stdout: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a local command's report; a bundle that did not apply exits with status 1.
fn print_local(result: Result<local::Report, local::LocalError>) -> ExitCode {
    match result {
        Ok(report) => {
            let code = print_stdout(&report.text);
            if report.success {
                code
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(config_path: Option<PathBuf>) -> ExitCode {
    init_logging();
    let config = match &config_path {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(tidegate_agent::daemon::run(
        config,
        Arc::new(SystemClock),
        shutdown_signal(),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "agent stopped");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
