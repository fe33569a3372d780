//! Wiring of the `tidegate-server` process: store, broker, ingest and HTTP API.
//!
//! [`run`] opens the store (running its migrations), starts the embedded broker unless an external
//! one is configured, starts ingest, serves the HTTP API, and stops them in reverse order when the
//! shutdown future completes. It reads no configuration files and no environment: the binary
//! passes everything in [`ServerConfig`].
//!
//! On the first start of a store (its token table is empty) it creates the admin token
//! `admin`, writes it to [`ServerConfig::admin_token_file`] when one is set, and hands it to the
//! caller once through [`RunningServer::take_first_admin_token`]. The token is stored only when
//! the file was written, so a failed write leaves the next start to try again.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::audit::{AuditError, AuditLog};
use crate::auth::{AuthState, TokenError, Tokens};
use crate::broker::{self, BrokerConfig, BrokerError};
use crate::ingest::{
    self, BrokerUrl, IngestConfig, IngestCounters, IngestDeps, IngestError, IngestHandle,
    IngestStats,
};
use crate::rollout::driver::DriverDeps;
use crate::rollout::store::RolloutStore;
use crate::rollout::{self, StoredWindows};
use crate::store::{Store, StoreError, StoreReader};

/// The default address of the HTTP API.
pub const DEFAULT_HTTP_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8740);

/// How long shutdown waits for HTTP requests in progress.
const HTTP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The MQTT broker the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerChoice {
    /// Run a broker inside this process.
    Embedded {
        /// The MQTT 3.1.1 listener.
        listen: SocketAddr,
        /// An optional MQTT 5 listener.
        listen_v5: Option<SocketAddr>,
    },
    /// Connect to a broker that runs elsewhere.
    External { url: BrokerUrl },
}

/// Everything the server process needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The SQLite file of the store, created when missing.
    pub db_path: PathBuf,
    pub http_listen: SocketAddr,
    pub broker: BrokerChoice,
    /// The largest MQTT packet accepted, in bytes: by the embedded broker from any client, and by
    /// ingest from the broker.
    pub mqtt_max_packet_bytes: usize,
    /// The signed trust root bundles are checked against before they are published. Without it,
    /// publication is refused.
    pub trust_root: Option<PathBuf>,
    /// The file that receives the admin token created on the first start (mode 0600), besides the
    /// caller. Later starts never write it.
    pub admin_token_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            db_path: PathBuf::from("tidegate.db"),
            http_listen: DEFAULT_HTTP_LISTEN,
            broker: BrokerChoice::Embedded {
                listen: broker::DEFAULT_LISTEN,
                listen_v5: None,
            },
            mqtt_max_packet_bytes: broker::DEFAULT_MAX_PACKET_BYTES,
            trust_root: None,
            admin_token_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    OpenStore(StoreError),
    #[error("cannot read the trust root {path}: {source}")]
    ReadTrustRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid trust root {path}: {reason}")]
    InvalidTrustRoot { path: PathBuf, reason: String },
    #[error(transparent)]
    OpenAudit(#[from] AuditError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error(transparent)]
    OpenPublications(#[from] crate::store::publications::PublicationError),
    #[error(transparent)]
    OpenOwners(#[from] crate::store::owners::OwnerError),
    #[error(transparent)]
    OpenSchedules(#[from] crate::store::schedules::ScheduleStoreError),
    #[error("failed to open the store for reading: {0}")]
    OpenReader(StoreError),
    #[error("the store open task failed: {0}")]
    StoreTask(tokio::task::JoinError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("failed to listen for HTTP connections on {addr}: {source}")]
    BindHttp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("the HTTP server stopped unexpectedly")]
    HttpStopped,
    #[error("ingest failed: {0}")]
    Ingest(#[from] IngestError),
    #[error("cannot start the rollout driver: {0}")]
    StartRollouts(crate::rollout::RolloutError),
}

/// A started server; [`RunningServer::run_until`] serves until shutdown.
pub struct RunningServer {
    http_addr: SocketAddr,
    mqtt_addr: Option<SocketAddr>,
    mqtt_v5_addr: Option<SocketAddr>,
    ingest: IngestHandle,
    http: JoinHandle<std::io::Result<()>>,
    stop_http: oneshot::Sender<()>,
    first_admin_token: Option<String>,
    rollout_driver: JoinHandle<()>,
}

/// Runs the server until `shutdown` completes or a part of it fails.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut server = start(config, IngestDeps::default()).await?;
    if let Some(token) = server.take_first_admin_token() {
        print_first_admin_token(&token);
    }
    server.run_until(shutdown).await
}

/// Prints the first admin token on stdout, on a line of its own that names what it is. Logs go to
/// stderr, so stdout contains only this line.
pub fn print_first_admin_token(token: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // A closed stdout loses the line; --admin-token-file is the way to keep it for scripts.
    let _ = writeln!(
        stdout,
        "tidegate-server: created the first admin token, shown only this once: {token}"
    );
    let _ = stdout.flush();
}

/// Opens the store, starts the broker (when embedded), ingest, the rollout driver and the HTTP
/// server, and returns once all of them accept connections. Rollout deadlines count from the end
/// of the window, in each tier's stored schedule, in which an agent can start the bundle
/// ([`StoredWindows`]).
pub async fn start(config: ServerConfig, deps: IngestDeps) -> Result<RunningServer, ServeError> {
    let db_path = config.db_path.clone();
    // The error is boxed on its way out of the task only because StoreError is large.
    let store = tokio::task::spawn_blocking(move || Store::open(&db_path).map_err(Box::new))
        .await
        .map_err(ServeError::StoreTask)?
        .map_err(|error| ServeError::OpenStore(*error))?;
    info!(db = %config.db_path.display(), "store opened");
    let reader = StoreReader::open(&config.db_path).map_err(ServeError::OpenReader)?;
    let publications = crate::store::publications::Publications::open(&config.db_path)?;
    let owners = crate::store::owners::OwnerAssignments::open(&config.db_path)?;
    let audit = AuditLog::open(&config.db_path)?;
    let tokens = Tokens::open(&config.db_path)?;
    let schedules = crate::store::schedules::Schedules::open(&config.db_path)?;
    let rollout_store = RolloutStore::open(&config.db_path)
        .map_err(|error| ServeError::StartRollouts(error.into()))?;
    let trust_root = match &config.trust_root {
        Some(path) => Some(current_trust_root(
            path,
            &publications,
            deps.clock.now_unix_s(),
        )?),
        None => None,
    };

    let (broker_url, mqtt_addr, mqtt_v5_addr) = match &config.broker {
        BrokerChoice::Embedded { listen, listen_v5 } => {
            let embedded = broker::start(BrokerConfig {
                listen: *listen,
                listen_v5: *listen_v5,
                max_packet_bytes: config.mqtt_max_packet_bytes,
                ..BrokerConfig::default()
            })
            .await?;
            let connect = embedded.connect_addr();
            let url = BrokerUrl {
                host: connect.ip().to_string(),
                port: connect.port(),
            };
            (url, Some(embedded.listen()), embedded.listen_v5())
        }
        BrokerChoice::External { url } => {
            info!(broker = %url, "using an external MQTT broker");
            (url.clone(), None, None)
        }
    };

    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| ServeError::BindHttp {
            addr: config.http_listen,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| ServeError::BindHttp {
            addr: config.http_listen,
            source,
        })?;

    // Created once the broker and the HTTP listener are up, so a start that fails on a busy port
    // does not use up the first token before anyone saw it.
    let first_admin_token = create_first_admin_token(&tokens, config.admin_token_file.as_deref())?;

    let ingest_config = IngestConfig {
        max_packet_bytes: config.mqtt_max_packet_bytes,
        ..IngestConfig::new(broker_url)
    };
    let clock = deps.clock.clone();
    let ingest = ingest::start(ingest_config, store, deps)?;

    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let console_state = crate::http_console::ConsoleState {
        publications: publications.clone(),
        owners,
    };
    let trust_root = Arc::new(std::sync::RwLock::new(trust_root));
    let (rollouts, rollout_driver) = rollout::driver::start(DriverDeps {
        store: rollout_store,
        orders: ingest.order_sender().with_audit(audit.clone()),
        events: ingest.events(),
        windows: Arc::new(StoredWindows::new(schedules.clone())),
        clock: clock.clone(),
        audit: audit.clone(),
    })
    .await
    .map_err(ServeError::StartRollouts)?;
    let publish_state = crate::http_publish::PublishState {
        root: trust_root.clone(),
        publications,
        reader: reader.clone(),
        orders: ingest.order_sender().with_audit(audit.clone()),
        audit: audit.clone(),
    };
    let schedule_state = crate::http_schedules::ScheduleState {
        root: trust_root,
        schedules,
        reader: reader.clone(),
        orders: ingest.order_sender().with_audit(audit.clone()),
        clock,
        audit: audit.clone(),
    };
    // Every module's routes are merged here, before http::app puts the token check in front.
    let api = crate::http::router(reader)
        .merge(crate::http_rollback::routes(publish_state.clone()))
        .merge(crate::http_publish::router(publish_state))
        .merge(crate::http_schedules::router(schedule_state))
        .merge(crate::http_console::router(console_state))
        .merge(crate::audit::routes(audit.clone()))
        .merge(crate::auth::routes(tokens.clone()))
        .merge(rollout::http::routes(rollout::http::RolloutApi {
            handle: rollouts,
            audit: audit.clone(),
        }));
    let app =
        crate::http::app(api, AuthState { tokens, audit }).merge(crate::http_console::pages());
    let http = tokio::spawn(async move {
        axum::serve(http_listener, app)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });
    info!(%http_addr, console = %format!("http://{http_addr}/"), "HTTP API listening");

    Ok(RunningServer {
        http_addr,
        mqtt_addr,
        mqtt_v5_addr,
        ingest,
        http,
        stop_http,
        first_admin_token,
        rollout_driver,
    })
}

/// Creates the first admin token when the store has no token, writing it to `file` first when
/// one is given. Returns the token when it created one.
fn create_first_admin_token(
    tokens: &Tokens,
    file: Option<&Path>,
) -> Result<Option<String>, ServeError> {
    let now = crate::ingest::Clock::now_unix_s(&crate::ingest::SystemClock::new());
    let token = tokens.create_first_admin(now, |token| match file {
        Some(path) => write_token_file(path, token).map_err(|error| {
            TokenError::Deliver(format!("cannot write {}: {error}", path.display()))
        }),
        None => Ok(()),
    })?;
    if token.is_some() {
        match file {
            Some(path) => info!(file = %path.display(), "created the first admin token"),
            None => info!("created the first admin token"),
        }
    }
    Ok(token)
}

/// Writes `token` and a newline to `path`, readable by its owner only.
fn write_token_file(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        // The mode above applies only to a new file; an existing one keeps its own until now.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        writeln!(file, "{token}")?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path)?;
        writeln!(file, "{token}")?;
        file.sync_all()
    }
}

impl RunningServer {
    /// Returns the admin token created on this start, once: `None` on a store that had tokens,
    /// and on every later call.
    pub fn take_first_admin_token(&mut self) -> Option<String> {
        self.first_admin_token.take()
    }

    /// The bound address of the HTTP API.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound MQTT 3.1.1 address of the embedded broker, or `None` with an external broker.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// The bound MQTT 5 address of the embedded broker, when it has one.
    pub fn mqtt_v5_addr(&self) -> Option<SocketAddr> {
        self.mqtt_v5_addr
    }

    pub fn ingest_stats(&self) -> IngestStats {
        self.ingest.stats()
    }

    /// The live ingest counters, which stay readable while [`RunningServer::run_until`] runs.
    pub fn ingest_counters(&self) -> Arc<IngestCounters> {
        self.ingest.counters()
    }

    /// Serves until `shutdown` completes or a part fails, then stops the HTTP server and ingest.
    /// The embedded broker keeps running until the process exits.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let RunningServer {
            mut ingest,
            mut http,
            stop_http,
            rollout_driver,
            ..
        } = self;

        let mut http_finished = false;
        let outcome = tokio::select! {
            _ = shutdown => {
                info!("shutting down");
                Ok(())
            }
            result = &mut http => {
                http_finished = true;
                match result {
                    Ok(Ok(())) => Err(ServeError::HttpStopped),
                    Ok(Err(error)) => Err(ServeError::Http(error)),
                    Err(error) => Err(ServeError::Http(std::io::Error::other(error))),
                }
            }
            error = ingest.failed() => Err(ServeError::Ingest(error)),
        };
        if let Err(error) = &outcome {
            error!(%error, "server stopping after a failure");
        }

        let _ = stop_http.send(());
        // The driver keeps nothing unwritten between passes, so stopping it mid-pass loses at
        // most the orders of that pass, which the next start sends again to agents that come online.
        rollout_driver.abort();
        let ingest_result = ingest.shutdown().await;
        if !http_finished
            && tokio::time::timeout(HTTP_SHUTDOWN_TIMEOUT, http)
                .await
                .is_err()
        {
            warn!("HTTP requests still running after {HTTP_SHUTDOWN_TIMEOUT:?}; stopping anyway");
        }
        outcome?;
        ingest_result?;
        info!("server stopped");
        Ok(())
    }
}

/// Reads the signed trust root given at start, which must carry its own root threshold, then
/// walks the newer versions stored by `POST /api/v1/trust-root` one at a time, each checked
/// against the one before. Returns the newest. `now_unix_s` dates the audit entry of a root
/// this store has not seen before.
fn current_trust_root(
    path: &std::path::Path,
    publications: &crate::store::publications::Publications,
    now_unix_s: i64,
) -> Result<tidegate_protocol::trust::TrustRoot, ServeError> {
    use tidegate_protocol::trust::{verify_initial_root, verify_root_update, SignedTrustRoot};

    let bytes = std::fs::read(path).map_err(|source| ServeError::ReadTrustRoot {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |reason: String| ServeError::InvalidTrustRoot {
        path: path.to_owned(),
        reason,
    };
    let signed = SignedTrustRoot::decode(&bytes).map_err(|error| invalid(error.to_string()))?;
    let mut root = verify_initial_root(&signed).map_err(|error| invalid(error.to_string()))?;
    // Publication time 0 marks the root given at start: agents are not moved to it until it is
    // published through the API.
    publications.record_trust_root(
        root.version,
        &bytes,
        0,
        now_unix_s,
        crate::audit::SERVER_ACTOR,
    )?;
    for (version, file) in publications.trust_roots()? {
        if version != root.version + 1 {
            continue;
        }
        let next = SignedTrustRoot::decode(&file)
            .map_err(|error| error.to_string())
            .and_then(|signed| {
                verify_root_update(&root, &signed).map_err(|error| error.to_string())
            });
        match next {
            Ok(next) => root = next,
            Err(reason) => {
                warn!(version, %reason, "a stored trust root does not follow the one before; ignoring it and later ones");
                break;
            }
        }
    }
    info!(path = %path.display(), version = root.version, "loaded the trust root");
    Ok(root)
}
