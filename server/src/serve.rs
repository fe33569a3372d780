//! Wiring of the `tidegate-server` process: store, broker, ingest and HTTP API.
//!
//! [`run`] opens the store (running its migrations), starts the embedded broker unless an external
//! one is configured, starts ingest, serves the HTTP API, and stops them in reverse order when the
//! shutdown future completes. It reads no configuration files and no environment: the binary
//! passes everything in [`ServerConfig`].

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::broker::{self, BrokerConfig, BrokerError};
use crate::ingest::{
    self, BrokerUrl, IngestConfig, IngestCounters, IngestDeps, IngestError, IngestHandle,
    IngestStats,
};
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
    OpenPublications(#[from] crate::store::publications::PublicationError),
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
}

/// A started server; [`RunningServer::run_until`] serves until shutdown.
pub struct RunningServer {
    http_addr: SocketAddr,
    mqtt_addr: Option<SocketAddr>,
    mqtt_v5_addr: Option<SocketAddr>,
    ingest: IngestHandle,
    http: JoinHandle<std::io::Result<()>>,
    stop_http: oneshot::Sender<()>,
}

/// Runs the server until `shutdown` completes or a part of it fails.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    start(config, IngestDeps::default())
        .await?
        .run_until(shutdown)
        .await
}

/// Opens the store, starts the broker (when embedded), ingest and the HTTP server, and returns once
/// all of them accept connections.
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
    let trust_root = match &config.trust_root {
        Some(path) => Some(current_trust_root(path, &publications)?),
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

    let ingest_config = IngestConfig {
        max_packet_bytes: config.mqtt_max_packet_bytes,
        ..IngestConfig::new(broker_url)
    };
    let ingest = ingest::start(ingest_config, store, deps)?;

    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let publish_state = crate::http_publish::PublishState {
        root: Arc::new(std::sync::RwLock::new(trust_root)),
        publications,
        reader: reader.clone(),
        orders: ingest.order_sender(),
    };
    let app = crate::http::router(reader)
        .merge(crate::http_rollback::routes(publish_state.clone()))
        .merge(crate::http_publish::router(publish_state));
    let http = tokio::spawn(async move {
        axum::serve(http_listener, app)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });
    info!(%http_addr, "HTTP API listening");

    Ok(RunningServer {
        http_addr,
        mqtt_addr,
        mqtt_v5_addr,
        ingest,
        http,
        stop_http,
    })
}

impl RunningServer {
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
/// against the one before. Returns the newest.
fn current_trust_root(
    path: &std::path::Path,
    publications: &crate::store::publications::Publications,
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
    publications.record_trust_root(root.version, &bytes, 0)?;
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
