//! The operator CLI `tidegate`: reads the fleet through the server's HTTP API and prints it, and
//! manages signing keys, trust roots and bundles in files on the operator's machine.
//!
//! It never opens the store itself, so it works from any machine that reaches the API. Private
//! keys never leave their files: only `bundle publish` sends anything, the signed bundle file.
//! Exit codes: 0 on success, 1 on an error, 2 on invalid usage (clap exits with 2 itself).

mod bundle;
mod client;
mod fleet;
pub mod format;
mod keys;
mod rollout;
mod root;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

pub use bundle::BundleCommand;
pub use client::ApiClient;
pub use keys::KeysCommand;
pub use rollout::RolloutCommand;
pub use root::RootCommand;

/// The server URL when neither `--server` nor `TIDEGATE_SERVER` sets one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8740";

/// The environment variable that replaces [`DEFAULT_SERVER`].
pub const SERVER_ENV: &str = "TIDEGATE_SERVER";

#[derive(Debug, Parser)]
#[command(
    name = "tidegate",
    version,
    about = "Operate a tidegate fleet through its server"
)]
pub struct Cli {
    /// Base URL of the tidegate server's HTTP API [default: $TIDEGATE_SERVER, or
    /// http://127.0.0.1:8740]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the agents and what they report
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Generate and show Ed25519 signing keys (kept on this machine, never sent)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Build, sign and check trust root versions
    #[command(subcommand)]
    Root(RootCommand),
    /// Build, sign, check, inspect and publish remediation bundles
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Take a published bundle to the fleet in waves, and watch, pause, resume or stop it
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// List every agent with its packages, pending updates and reboot state
    List(ListArgs),
    /// Show one agent's facts, counters, warnings and pending updates
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the server's JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Agent id, unique prefix of an agent id, or exact hostname
    #[arg(value_name = "AGENT")]
    pub agent: String,

    /// Print the server's JSON instead of text
    #[arg(long)]
    pub json: bool,

    /// Also list every package
    #[arg(long)]
    pub packages: bool,
}

/// A failed CLI command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot reach tidegate server at {url}: {source} (is tidegate-server running? set \
         --server or {SERVER_ENV})"
    )]
    Unreachable {
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("invalid server URL {url:?}: {source} (expected for example {DEFAULT_SERVER})")]
    InvalidServerUrl {
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("the server returned {status} for {url}: {message}")]
    Api {
        url: String,
        status: u16,
        message: String,
    },
    #[error("failed to read the response of {url}: {source}")]
    Response {
        url: String,
        source: Box<ureq::Error>,
    },
    #[error(
        "invalid JSON in the response of {url}: {source} (is the server a tidegate server of \
         the same version?)"
    )]
    InvalidJson {
        url: String,
        source: serde_json::Error,
    },
    #[error(
        "no agent matches {query:?} by id, id prefix or hostname (`tidegate fleet list` shows \
         every agent)"
    )]
    AgentNotFound { query: String },
    #[error("{query:?} matches {} agents: {}; give more of the id", .matches.len(), .matches.join(", "))]
    AmbiguousAgent { query: String, matches: Vec<String> },
    #[error("failed to write the output: {0}")]
    Output(#[from] io::Error),
    #[error(transparent)]
    Keys(#[from] keys::KeysCommandError),
    #[error(transparent)]
    Root(#[from] root::RootCommandError),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleCommandError),
}

/// The environment and clock a command reads, passed in so tests can fix them.
#[derive(Debug, Clone)]
pub struct Context {
    /// The value of `TIDEGATE_SERVER`, if set.
    pub server_from_env: Option<String>,
    /// The current time, in seconds since the Unix epoch, for "5m ago".
    pub now_unix_s: i64,
}

impl Context {
    /// Reads the environment and the system clock.
    pub fn from_environment() -> Self {
        let now_unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs() as i64)
            .unwrap_or(0);
        Self {
            server_from_env: std::env::var(SERVER_ENV).ok().filter(|url| !url.is_empty()),
            now_unix_s,
        }
    }
}

/// Runs the command with the real environment, stdout and stderr, and returns the exit code.
pub fn run(cli: Cli) -> ExitCode {
    let context = Context::from_environment();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match execute(cli, &context, &mut out).and_then(|()| Ok(out.flush()?)) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped early (`tidegate fleet list | head`) is not an error.
        Err(CliError::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tidegate: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command and writes its output to `out`.
pub fn execute(cli: Cli, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let server = resolve_server(cli.server, context);
    let client = ApiClient::new(&server);
    match cli.command {
        Command::Fleet(FleetCommand::List(args)) => fleet::list(&client, &args, context, out),
        Command::Fleet(FleetCommand::Show(args)) => fleet::show(&client, &args, context, out),
        Command::Keys(command) => keys::run(command, out),
        Command::Root(command) => root::run(command, out),
        Command::Bundle(command) => bundle::run(command, &client, context, out),
        Command::Rollout(command) => rollout::run(command, &client, context, out),
    }
}

/// Picks the server URL: `--server`, then `TIDEGATE_SERVER`, then [`DEFAULT_SERVER`].
fn resolve_server(flag: Option<String>, context: &Context) -> String {
    flag.or_else(|| context.server_from_env.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(server_from_env: Option<&str>) -> Context {
        Context {
            server_from_env: server_from_env.map(str::to_owned),
            now_unix_s: 0,
        }
    }

    #[test]
    fn server_flag_wins_over_environment() {
        let server = resolve_server(Some("http://a:1".into()), &context(Some("http://b:2")));
        assert_eq!(server, "http://a:1");
    }

    #[test]
    fn server_environment_replaces_default() {
        assert_eq!(
            resolve_server(None, &context(Some("http://b:2"))),
            "http://b:2"
        );
        assert_eq!(resolve_server(None, &context(None)), DEFAULT_SERVER);
    }

    #[test]
    fn cli_arguments_parse() {
        let cli =
            Cli::try_parse_from(["tidegate", "fleet", "show", "gw-01", "--packages"]).unwrap();
        assert!(cli.server.is_none());
        let Command::Fleet(FleetCommand::Show(args)) = cli.command else {
            panic!("expected fleet show, got {:?}", cli.command);
        };
        assert_eq!(args.agent, "gw-01");
        assert!(args.packages);
        assert!(!args.json);

        let cli =
            Cli::try_parse_from(["tidegate", "fleet", "list", "--server", "http://x:1"]).unwrap();
        assert_eq!(cli.server.as_deref(), Some("http://x:1"));
    }

    #[test]
    fn cli_usage_error_exits_with_2() {
        let error = Cli::try_parse_from(["tidegate", "fleet", "frobnicate"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }
}
