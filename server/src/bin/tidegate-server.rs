//! The tidegate server process. See [`tidegate_server::serve`].

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tidegate_server::broker;
use tidegate_server::ingest::BrokerUrl;
use tidegate_server::serve::{self, BrokerChoice, ServerConfig};
use tracing_subscriber::EnvFilter;

/// Runs the tidegate server: an MQTT broker (embedded unless --broker is given), report ingest
/// into a SQLite store, and the HTTP API. On the first start it prints an admin API token on
/// stdout, once.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The SQLite store file, created when missing.
    #[arg(long, value_name = "PATH", default_value = "tidegate.db")]
    db: PathBuf,

    /// The address the HTTP API listens on.
    #[arg(long, value_name = "ADDR", default_value_t = serve::DEFAULT_HTTP_LISTEN)]
    http_listen: SocketAddr,

    /// The address the embedded MQTT 3.1.1 broker listens on; use 0.0.0.0:1884 to serve a fleet.
    #[arg(long, value_name = "ADDR", default_value_t = broker::DEFAULT_LISTEN, conflicts_with = "broker")]
    mqtt_listen: SocketAddr,

    /// An address for an additional MQTT 5 listener of the embedded broker.
    #[arg(long, value_name = "ADDR", conflicts_with = "broker")]
    mqtt5_listen: Option<SocketAddr>,

    /// Use an external MQTT broker instead of the embedded one, as mqtt://HOST:PORT.
    #[arg(long, value_name = "URL")]
    broker: Option<BrokerUrl>,

    /// The signed trust root that published bundles are checked against (tidegate root sign).
    /// Without it, bundle publication is refused.
    #[arg(long, value_name = "FILE")]
    trust_root: Option<PathBuf>,

    /// Also write the admin token created on the first start (when the store has no token) to
    /// this file, readable by its owner only. The token is printed on stdout either way, once.
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<PathBuf>,

    /// The largest MQTT packet accepted, in bytes. Set an external broker's own limit no higher.
    #[arg(long, value_name = "BYTES", default_value_t = broker::DEFAULT_MAX_PACKET_BYTES)]
    mqtt_max_packet_bytes: usize,

    /// The log level, unless RUST_LOG is set (RUST_LOG takes tracing-subscriber filter directives).
    #[arg(long, value_name = "LEVEL", default_value = "info",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.log_level);

    let broker = match args.broker {
        Some(url) => BrokerChoice::External { url },
        None => BrokerChoice::Embedded {
            listen: args.mqtt_listen,
            listen_v5: args.mqtt5_listen,
        },
    };
    let config = ServerConfig {
        db_path: args.db,
        http_listen: args.http_listen,
        broker,
        mqtt_max_packet_bytes: args.mqtt_max_packet_bytes,
        trust_root: args.trust_root,
        admin_token_file: args.admin_token_file,
    };

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve::run(config, shutdown_signal()));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "tidegate-server failed");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr. rumqttd logs every client that disconnects without DISCONNECT at ERROR, which
/// is routine for a fleet, so it is silenced unless RUST_LOG names it.
fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},rumqttd=off")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
