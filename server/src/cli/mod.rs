//! The operator CLI `tidegate`: reads the fleet through the server's HTTP API and prints it, and
//! manages signing keys, trust roots, bundles and window schedules in files on the operator's
//! machine.
//!
//! It opens a store file only for `audit verify --db` and `audit export --db`, read-only.
//! Everything else goes through the API, so it works from any machine that reaches it. API
//! requests carry the token from `--token-file` or `TIDEGATE_TOKEN`. Private keys never leave
//! their files: only `bundle publish` and `windows publish` send anything of them, the signed file.
//! Exit codes: 0 on success, 1 on an error, 2 on invalid usage (clap exits with 2 itself).

mod audit;
mod bundle;
mod client;
mod fleet;
pub mod format;
mod keys;
mod rollout;
mod root;
mod tokens;
mod windows;
mod windows_server;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

pub use audit::AuditCommand;
pub use bundle::BundleCommand;
pub use client::ApiClient;
pub use keys::KeysCommand;
pub use rollout::RolloutCommand;
pub use root::RootCommand;
pub use tokens::TokensCommand;
pub use windows::WindowsCommand;

/// The server URL when neither `--server` nor `TIDEGATE_SERVER` sets one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8740";

/// The environment variable that replaces [`DEFAULT_SERVER`].
pub const SERVER_ENV: &str = "TIDEGATE_SERVER";

/// The environment variable that contains the API token when `--token-file` is not given.
pub const TOKEN_ENV: &str = "TIDEGATE_TOKEN";

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

    /// File whose first line is the API token [default: $TIDEGATE_TOKEN]
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

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
    /// Define, preview, sign and check a tier's maintenance windows and freezes
    #[command(subcommand)]
    Windows(WindowsCommand),
    /// Create, list and revoke API tokens (needs an admin token)
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Verify and export the server's hash-chained audit log
    #[command(subcommand)]
    Audit(AuditCommand),
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
    /// Assign an agent to an owner team (needs an API token with role `it`)
    Assign(AssignArgs),
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

#[derive(Debug, Args)]
pub struct AssignArgs {
    /// Agent id, unique prefix of an agent id, or exact hostname
    #[arg(value_name = "AGENT")]
    pub agent: String,

    /// The owner team, at most 64 characters; an empty string removes the assignment
    #[arg(long, value_name = "TEAM")]
    pub owner: String,
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
        "the server at {url} did not accept the API token: {message} (give a token with \
         --token-file PATH or {TOKEN_ENV}; tidegate-server prints an admin token on its first \
         start)"
    )]
    Unauthorized { url: String, message: String },
    #[error("cannot read the token file {path}: {source}")]
    TokenFile { path: PathBuf, source: io::Error },
    #[error("the token file {path} is empty")]
    EmptyTokenFile { path: PathBuf },
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
    #[error(transparent)]
    Windows(#[from] windows::WindowsCommandError),
    #[error(transparent)]
    WindowsServer(#[from] windows_server::WindowsServerError),
    #[error(transparent)]
    Audit(#[from] audit::AuditCommandError),
}

/// The environment and clock a command reads, passed in so tests can fix them.
#[derive(Debug, Clone)]
pub struct Context {
    /// The value of `TIDEGATE_SERVER`, if set.
    pub server_from_env: Option<String>,
    /// The value of `TIDEGATE_TOKEN`, if set.
    pub token_from_env: Option<String>,
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
            token_from_env: std::env::var(TOKEN_ENV)
                .ok()
                .map(|token| token.trim().to_owned())
                .filter(|token| !token.is_empty()),
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
    let token = resolve_token(cli.token_file.as_deref(), context)?;
    let client = ApiClient::new(&server, token.as_deref());
    match cli.command {
        Command::Fleet(FleetCommand::List(args)) => fleet::list(&client, &args, context, out),
        Command::Fleet(FleetCommand::Show(args)) => fleet::show(&client, &args, context, out),
        Command::Fleet(FleetCommand::Assign(args)) => fleet::assign(&client, &args, out),
        Command::Keys(command) => keys::run(command, out),
        Command::Root(command) => root::run(command, out),
        Command::Bundle(command) => bundle::run(command, &client, context, out),
        Command::Windows(command) => windows::run(command, &client, context, out),
        Command::Tokens(command) => tokens::run(command, &client, context, out),
        Command::Audit(command) => audit::run(command, &client, out),
        Command::Rollout(command) => rollout::run(command, &client, context, out),
    }
}

/// Picks the API token: the first line of `--token-file`, then `TIDEGATE_TOKEN`, then none.
fn resolve_token(file: Option<&Path>, context: &Context) -> Result<Option<String>, CliError> {
    let Some(path) = file else {
        return Ok(context.token_from_env.clone());
    };
    let text = std::fs::read_to_string(path).map_err(|source| CliError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(CliError::EmptyTokenFile {
            path: path.to_owned(),
        });
    }
    Ok(Some(token.to_owned()))
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
            token_from_env: None,
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

        let cli = Cli::try_parse_from([
            "tidegate",
            "fleet",
            "assign",
            "gw-01",
            "--owner",
            "plant ops",
        ])
        .unwrap();
        let Command::Fleet(FleetCommand::Assign(args)) = cli.command else {
            panic!("expected fleet assign, got {:?}", cli.command);
        };
        assert_eq!(args.agent, "gw-01");
        assert_eq!(args.owner, "plant ops");

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
