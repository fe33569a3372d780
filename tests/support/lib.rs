//! Helpers for the end-to-end tests: a private Mosquitto broker, a TCP proxy that can cut the
//! network, the real `tidegate-server` and `tidegate-agent` binaries as child processes, fixture
//! roots and an MQTT test client.
//!
//! Everything listens on 127.0.0.1 on ports the operating system picked, and writes only below
//! temporary directories the test owns.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod exec_kit;
pub mod proxy;

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Returns a free port below Linux's default ephemeral range (32768-60999), for brokers that a
/// test restarts on the same port. [`free_port`] and outgoing connections of parallel tests draw
/// from the ephemeral range, so they cannot take such a port while its broker is down.
pub fn free_port_for_restarts() -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut state = seed.max(1);
    for _ in 0..100 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let port = 20_000 + (state % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found between 20000 and 32000");
}

/// Polls `condition` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    wait_for(
        &format!("127.0.0.1:{port} to accept connections"),
        timeout,
        || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()),
    );
}

/// The path of a binary of this workspace, built next to the test executable. When
/// `TIDEGATE_TEST_BIN_DIR` is set, the binary comes from that directory instead, because in a
/// target directory that several checkouts share the binary may come from another checkout.
pub fn workspace_binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("TIDEGATE_TEST_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        assert!(
            path.exists(),
            "{} is missing: TIDEGATE_TEST_BIN_DIR names a directory without it",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace, or cargo nextest run --workspace)",
        path.display()
    );
    path
}

/// A child process that is killed when dropped.
pub struct Process {
    pub child: Child,
    pub name: String,
}

impl Process {
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    /// Kills the process with SIGKILL: no shutdown code runs, as when the host loses power.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop with SIGTERM and waits up to 10 s for it.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private Mosquitto broker on its own port, without persistence, so a restart loses every
/// session and retained message.
pub struct Mosquitto {
    pub port: u16,
    dir: TempDir,
    process: Option<Process>,
}

impl Mosquitto {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut broker = Self {
            port: 0,
            dir,
            process: None,
        };
        // Tests run in parallel processes, so a port that was free can be taken before Mosquitto
        // binds it; Mosquitto then exits at once and the test would talk to another test's broker.
        for _ in 0..5 {
            broker.port = free_port_for_restarts();
            broker.spawn();
            if broker.process.as_mut().is_some_and(Process::is_running) {
                return broker;
            }
        }
        panic!("mosquitto did not start on any of 5 free ports");
    }

    fn spawn(&mut self) {
        let config = self.dir.path().join("mosquitto.conf");
        let mut file = std::fs::File::create(&config).expect("write mosquitto.conf");
        writeln!(file, "listener {} 127.0.0.1", self.port).unwrap();
        writeln!(file, "allow_anonymous true").unwrap();
        writeln!(file, "persistence false").unwrap();
        writeln!(file, "log_dest stderr").unwrap();
        writeln!(
            file,
            "log_type {}",
            std::env::var("TIDEGATE_TEST_MOSQUITTO_LOG").unwrap_or_else(|_| "error".into())
        )
        .unwrap();
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("mosquitto is not installed (apt-get install mosquitto)");
        let process = Process::spawn("mosquitto", Command::new(binary).arg("-c").arg(&config));
        self.process = Some(process);
        wait_for_port(self.port, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker and starts a new one on the same port: sessions, subscriptions and
    /// retained messages are gone.
    pub fn restart(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        self.spawn();
        assert!(
            self.process.as_mut().is_some_and(Process::is_running),
            "mosquitto did not start again on port {}: another process took the port",
            self.port
        );
    }
}

/// A fixture root with a dpkg status file of `count` installed packages named `pkg-0000`…, one
/// apt list offering a newer version of the first `pending` of them, and `etc/os-release`.
pub fn fixture_root(count: usize, pending: usize) -> TempDir {
    let root = tempfile::tempdir().expect("temporary directory");
    let dpkg = root.path().join("var/lib/dpkg");
    std::fs::create_dir_all(&dpkg).unwrap();
    let mut status = String::new();
    let mut lists = String::new();
    for i in 0..count {
        status.push_str(&format!(
            "Package: pkg-{i:04}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: 1.{i}-1\nDescription: test package {i}\n a continuation line\n\n"
        ));
        if i < pending {
            lists.push_str(&format!(
                "Package: pkg-{i:04}\nArchitecture: amd64\nVersion: 1.{i}-2\n\n"
            ));
        }
    }
    std::fs::write(dpkg.join("status"), status).unwrap();
    let apt = root.path().join("var/lib/apt/lists");
    std::fs::create_dir_all(&apt).unwrap();
    std::fs::write(
        apt.join("deb.example_debian_dists_stable_main_binary-amd64_Packages"),
        lists,
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/os-release"),
        "NAME=\"Fixture Linux\"\nVERSION_ID=\"1\"\n",
    )
    .unwrap();
    root
}

/// Settings of one test agent; `write` turns them into a configuration file.
pub struct AgentSettings {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub broker_url: String,
    pub interval_seconds: f64,
    pub full_report_interval_seconds: u64,
    pub max_reports: u64,
    pub ack_timeout_seconds: f64,
    pub keep_alive_seconds: u64,
    pub max_packet_size_bytes: usize,
    pub tier: String,
    pub trust_root_file: Option<PathBuf>,
    /// Whether bundles wait for a signed window schedule. Off by default in tests, which apply
    /// bundles at once unless they test windows.
    pub require_schedule: bool,
}

impl AgentSettings {
    pub fn new(root: &Path, state_dir: &Path, broker_url: String) -> Self {
        Self {
            root: root.to_owned(),
            state_dir: state_dir.to_owned(),
            broker_url,
            interval_seconds: 1.0,
            full_report_interval_seconds: 3600,
            max_reports: 0,
            ack_timeout_seconds: 5.0,
            keep_alive_seconds: 5,
            max_packet_size_bytes: 131_072,
            tier: "default".into(),
            trust_root_file: None,
            require_schedule: false,
        }
    }

    pub fn write(&self, path: &Path) {
        let text = format!(
            "root_dir = {root:?}\nstate_dir = {state:?}\ntier = {tier:?}\ntrust_root_file = {trust_root:?}\n\n[mqtt]\nbroker_url = {url:?}\nkeep_alive_seconds = {keep_alive}\nmax_packet_size_bytes = {packet}\nconnect_timeout_seconds = 3\nreconnect_initial_delay_seconds = 0.2\nreconnect_max_delay_seconds = 2\nstable_connection_seconds = 5\n\n[reports]\ninterval_seconds = {interval}\nfull_report_interval_seconds = {full}\nack_timeout_seconds = {ack}\nmax_reports = {max}\n\n[windows]\nrequire_schedule = {require_schedule}\n\n# Test machines need not run a time service that marks the kernel clock synchronised.\n[clock]\nrequire_os_synchronised = false\n",
            root = self.root,
            state = self.state_dir,
            tier = self.tier,
            trust_root = self.trust_root_file.clone().unwrap_or_default(),
            url = self.broker_url,
            keep_alive = self.keep_alive_seconds,
            packet = self.max_packet_size_bytes,
            interval = self.interval_seconds,
            full = self.full_report_interval_seconds,
            ack = self.ack_timeout_seconds,
            max = self.max_reports,
            require_schedule = self.require_schedule,
        );
        std::fs::write(path, text).expect("write agent configuration");
    }

    /// Writes the configuration next to the state directory and starts the agent binary.
    pub fn start(&self) -> Process {
        std::fs::create_dir_all(&self.state_dir).unwrap();
        let config = self.state_dir.with_extension("toml");
        self.write(&config);
        Process::spawn(
            "tidegate-agent",
            Command::new(workspace_binary("tidegate-agent"))
                .arg("run")
                .arg("--config")
                .arg(&config)
                .env(
                    "RUST_LOG",
                    std::env::var("TIDEGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
                ),
        )
    }
}

/// Creates the agent's key pair in `state_dir` before the agent starts, and returns the agent id
/// the agent will use.
pub fn prepare_agent_id(state_dir: &Path) -> String {
    std::fs::create_dir_all(state_dir).unwrap();
    tidegate_agent::identity::Identity::load_or_create(state_dir)
        .expect("create agent key")
        .agent_id
        .to_string()
}

/// A running `tidegate-server`, with its HTTP address and its admin token.
pub struct Server {
    pub process: Process,
    pub http: SocketAddr,
    pub db: PathBuf,
    /// The admin token the server wrote to [`Server::token_file`] on the first start of `db`.
    pub token: String,
    /// The embedded broker's port, when the server runs one.
    pub mqtt_port: Option<u16>,
}

impl Server {
    /// Starts the server on `db` with its embedded broker on a free port.
    pub fn start_embedded(db: &Path) -> Self {
        Self::start(db, None, None)
    }

    /// Starts the server on `db` with an external broker.
    pub fn start_external(db: &Path, broker_url: &str) -> Self {
        Self::start(db, Some(broker_url), None)
    }

    /// Starts the server with its embedded broker and a trust root to check publications against.
    pub fn start_with_trust_root(db: &Path, trust_root: &Path) -> Self {
        Self::start(db, None, Some(trust_root))
    }

    fn start(db: &Path, broker_url: Option<&str>, trust_root: Option<&Path>) -> Self {
        for _ in 0..5 {
            // rumqttd binds its own listener, so the port must stay free until it does: one below
            // the ephemeral range cannot be taken by a parallel test's outgoing connection.
            let mqtt_port = broker_url.is_none().then(free_port_for_restarts);
            let mut server = Self::spawn(db, broker_url, mqtt_port, trust_root);
            std::thread::sleep(Duration::from_millis(200));
            if server.process.is_running() {
                return server;
            }
        }
        panic!("tidegate-server did not start on any of 5 free ports");
    }

    fn spawn(
        db: &Path,
        broker_url: Option<&str>,
        mqtt_port: Option<u16>,
        trust_root: Option<&Path>,
    ) -> Self {
        let http_port = free_port();
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let mut command = Command::new(workspace_binary("tidegate-server"));
        command
            .arg("--db")
            .arg(db)
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--admin-token-file")
            .arg(Self::token_file(db))
            // The first start prints the token on stdout; the test reads the file instead.
            .stdout(Stdio::null());
        if let Some(url) = broker_url {
            command.arg("--broker").arg(url);
        }
        if let Some(path) = trust_root {
            command.arg("--trust-root").arg(path);
        }
        if let Some(port) = mqtt_port {
            command
                .arg("--mqtt-listen")
                .arg(format!("127.0.0.1:{port}"));
        }
        command.env(
            "RUST_LOG",
            std::env::var("TIDEGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        let process = Process::spawn("tidegate-server", &mut command);
        wait_for_port(http_port, Duration::from_secs(20));
        if let Some(port) = mqtt_port {
            wait_for_port(port, Duration::from_secs(20));
        }
        // The server writes the file before it listens; a restart finds the first start's file.
        let token = std::fs::read_to_string(Self::token_file(db))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Self {
            process,
            http,
            db: db.to_owned(),
            token,
            mqtt_port,
        }
    }

    /// Returns the file the server writes its first admin token to: `NAME.admin-token` next to
    /// `db`.
    pub fn token_file(db: &Path) -> PathBuf {
        db.with_extension("admin-token")
    }

    /// Builds a `tidegate` command aimed at this server with the admin token.
    pub fn tidegate(&self) -> Command {
        let mut command = Command::new(workspace_binary("tidegate"));
        command
            .env("TIDEGATE_SERVER", self.url())
            .env("TIDEGATE_TOKEN", &self.token);
        command
    }

    /// Creates a token with `role` through the API and returns its text.
    pub fn create_token(&self, name: &str, role: &str) -> String {
        let url = format!("{}/api/v1/tokens", self.url());
        let mut response = ureq::post(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(serde_json::json!({"name": name, "role": role}))
            .unwrap_or_else(|error| panic!("POST {url} failed: {error}"));
        let body: serde_json::Value = response.body_mut().read_json().expect("JSON body");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// POSTs `body` as `application/octet-stream` with `token` and the extra `headers`; returns
    /// the status and the body as JSON (`Null` when it is not JSON).
    pub fn post_octets(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.url());
        let mut request = ureq::post(&url)
            .header("Content-Type", "application/octet-stream")
            .header("Authorization", format!("Bearer {token}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .config()
            .http_status_as_error(false)
            .build()
            .send(body)
            .unwrap_or_else(|error| panic!("POST {url} failed: {error}"));
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .read_json()
            .unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// Reads every audit log entry, oldest first.
    pub fn audit_entries(&self) -> Vec<serde_json::Value> {
        let mut entries = Vec::new();
        loop {
            let after = entries
                .last()
                .and_then(|entry: &serde_json::Value| entry["seq"].as_u64())
                .unwrap_or(0);
            let page = self
                .get_json(&format!("/api/v1/audit?after={after}&limit=1000"))
                .expect("the audit route exists");
            let page = page.as_array().expect("an array of entries").clone();
            let done = page.len() < 1000;
            entries.extend(page);
            if done {
                return entries;
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The URL agents use to reach the embedded broker.
    pub fn broker_url(&self) -> String {
        format!(
            "mqtt://127.0.0.1:{}",
            self.mqtt_port.expect("the server runs its embedded broker")
        )
    }

    /// `GET path` on the HTTP API as JSON, or `None` for a 404.
    pub fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let url = format!("{}{path}", self.url());
        let request = ureq::get(&url).header("Authorization", format!("Bearer {}", self.token));
        match request.call() {
            Ok(mut response) => Some(response.body_mut().read_json().expect("JSON body")),
            Err(ureq::Error::StatusCode(404)) => None,
            Err(error) => panic!("GET {url} failed: {error}"),
        }
    }

    /// The fleet entry of one agent, once the server has one.
    pub fn agent(&self, agent_id: &str) -> Option<serde_json::Value> {
        let fleet = self.get_json("/api/v1/agents")?;
        fleet["agents"]
            .as_array()?
            .iter()
            .find(|agent| agent["agent_id"] == agent_id)
            .cloned()
    }
}

/// An MQTT client for the test itself, collecting every message it receives.
pub struct TestClient {
    pub client: rumqttc::Client,
    pub messages: std::sync::mpsc::Receiver<rumqttc::Publish>,
}

impl TestClient {
    pub fn connect(port: u16, client_id: &str) -> Self {
        let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
        let (client, mut connection) = rumqttc::Client::new(options, 64);
        let (sender, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                        if sender.send(publish).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Self { client, messages }
    }

    pub fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .expect("queue subscribe");
    }

    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
            .expect("queue publish");
    }

    /// Waits up to `timeout` for a message on which `pick` returns `Some`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&rumqttc::Publish) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(publish) => {
                    if let Some(value) = pick(&publish) {
                        return value;
                    }
                }
                Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
            }
        }
    }

    /// Drains the messages received so far.
    pub fn drain(&self) -> Vec<rumqttc::Publish> {
        self.messages.try_iter().collect()
    }
}
