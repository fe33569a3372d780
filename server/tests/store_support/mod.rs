//! Builders for reports and statuses shared by the store, HTTP and CLI tests.
//!
//! The sample host `gw-01` has six package rows: four installed (curl, libssl3 for amd64 and for
//! i386, openssl), one removed with its configuration left (`config-files`) and one broken
//! (`half-configured`). Two updates are pending, one of them (openssl) from a security archive.

#![allow(dead_code)]

use std::path::PathBuf;

use tidegate_protocol::{
    AgentId, BootId, Ecosystem, HostFacts, InstallState, Inventory, InventoryDelta, Package,
    PendingUpdate, RebootRequired, Report, ReportBody, Selection, Status, StatusState, Warning,
};
use tidegate_server::store::{Incoming, Store};

pub const AGENT: &str = "3f2a0c9d11e4b5a6c7d8e9f0a1b2c3d4";
pub const OTHER_AGENT: &str = "9c00aa11bb22cc33dd44ee55ff667788";

pub const BOOT_1: BootId = BootId([1; 16]);
pub const BOOT_2: BootId = BootId([2; 16]);

/// When the sample inventory was collected.
pub const COLLECTED_AT: i64 = 1_700_000_000;
/// Five hours before [`COLLECTED_AT`].
pub const BOOT_TIME: i64 = COLLECTED_AT - 5 * 3_600;

pub fn agent_id(id: &str) -> AgentId {
    AgentId::parse(id).expect("test agent ids are valid")
}

pub fn package(name: &str, arch: &str, version: &str, state: InstallState) -> Package {
    Package {
        ecosystem: Ecosystem::Deb,
        name: name.into(),
        arch: arch.into(),
        version: version.into(),
        state,
        selection: Selection::Install,
        provides: vec![],
    }
}

pub fn pending(name: &str, installed: &str, candidate: &str, security: bool) -> PendingUpdate {
    PendingUpdate {
        ecosystem: Ecosystem::Deb,
        name: name.into(),
        arch: "amd64".into(),
        installed_version: installed.into(),
        candidate_version: candidate.into(),
        held: false,
        security,
    }
}

pub fn facts(hostname: &str) -> HostFacts {
    HostFacts {
        hostname: hostname.into(),
        os_name: "Debian GNU/Linux".into(),
        os_version: "12".into(),
        kernel_version: "6.1.0-18-amd64".into(),
        arch: "x86_64".into(),
        boot_time_unix_s: BOOT_TIME,
        cpu_count: 4,
        memory_total_bytes: 8 * 1024 * 1024 * 1024,
    }
}

/// Builds the sample inventory of `gw-01`, normalized.
pub fn inventory() -> Inventory {
    let mut mta = package("exim4", "amd64", "4.96-15", InstallState::ConfigFiles);
    mta.selection = Selection::Deinstall;
    let mut mail = package(
        "bsd-mailx",
        "amd64",
        "8.1.2-0.20220412",
        InstallState::HalfConfigured,
    );
    mail.provides = vec!["mailx".into(), "mail-reader".into()];
    let mut inventory = Inventory {
        facts: facts("gw-01"),
        packages: vec![
            package(
                "curl",
                "amd64",
                "7.88.1-10+deb12u5",
                InstallState::Installed,
            ),
            package(
                "libssl3",
                "amd64",
                "3.0.11-1~deb12u2",
                InstallState::Installed,
            ),
            package(
                "libssl3",
                "i386",
                "3.0.11-1~deb12u2",
                InstallState::Installed,
            ),
            package(
                "openssl",
                "amd64",
                "3.0.11-1~deb12u2",
                InstallState::Installed,
            ),
            mta,
            mail,
        ],
        pending_updates: vec![
            pending("openssl", "3.0.11-1~deb12u2", "3.0.13-1~deb12u1", true),
            pending("curl", "7.88.1-10+deb12u5", "7.88.1-10+deb12u6", false),
        ],
        package_lists_updated_unix_s: Some(COLLECTED_AT - 600),
        reboot: RebootRequired {
            required: true,
            packages: vec!["linux-image-6.1.0-18-amd64".into()],
        },
        warnings: vec![Warning {
            source: "dpkg".into(),
            message: "skipped a stanza without a Package field".into(),
        }],
        ..Default::default()
    };
    inventory.normalize();
    inventory
}

pub fn full_report(agent: &str, boot_id: BootId, seq: u64, inventory: Inventory) -> Report {
    Report {
        agent_id: agent_id(agent),
        boot_id,
        seq,
        collected_at_unix_s: COLLECTED_AT + seq as i64 * 60,
        outbox_dropped: 0,
        body: ReportBody::Full(inventory),
    }
}

pub fn delta_report(
    agent: &str,
    boot_id: BootId,
    seq: u64,
    base_seq: u64,
    delta: InventoryDelta,
) -> Report {
    Report {
        agent_id: agent_id(agent),
        boot_id,
        seq,
        collected_at_unix_s: COLLECTED_AT + seq as i64 * 60,
        outbox_dropped: 0,
        body: ReportBody::Delta { base_seq, delta },
    }
}

/// Builds the delta of `apt-get install openssl` on the sample host: one row upgraded and the
/// openssl update no longer pending.
pub fn openssl_upgrade() -> InventoryDelta {
    let before = inventory();
    let mut after = before.clone();
    for package in &mut after.packages {
        if package.name == "openssl" {
            package.version = "3.0.13-1~deb12u1".into();
        }
    }
    after
        .pending_updates
        .retain(|update| update.name != "openssl");
    before.diff(&after)
}

pub fn status(agent: &str, state: StatusState, at_unix_s: i64, version: &str) -> Status {
    Status {
        agent_id: agent_id(agent),
        boot_id: BOOT_1,
        state,
        agent_version: version.into(),
        session_present: false,
        at_unix_s,
    }
}

pub fn report_in(report: Report, received_at_unix_s: i64) -> Incoming {
    Incoming::Report {
        report,
        received_at_unix_s,
    }
}

pub fn status_in(status: Status, received_at_unix_s: i64) -> Incoming {
    Incoming::Status {
        status,
        received_at_unix_s,
    }
}

/// Opens a store in a fresh temporary directory, which lives as long as the returned guard.
pub fn temp_store() -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let path = dir.path().join("fleet.db");
    let store = Store::open(&path).expect("open a new store");
    (dir, path, store)
}

/// The API that [`spawn_api`] serves, with its admin token.
pub struct TestApi {
    pub base: String,
    pub token: String,
}

/// Serves the HTTP API of the store at `path` (fleet reads, audit log and tokens, behind the
/// token check) on 127.0.0.1 at a free port, on a thread of its own that lives until the test
/// process ends. Creates the store's first admin token and returns it with the base URL.
pub fn spawn_api(path: &std::path::Path) -> TestApi {
    use tidegate_server::audit::AuditLog;
    use tidegate_server::auth::{AuthState, Tokens};

    let reader = tidegate_server::store::StoreReader::open(path).expect("open a store reader");
    let tokens = Tokens::open(path).expect("open the token table");
    let audit = AuditLog::open(path).expect("open the audit log");
    let token = tokens
        .create_first_admin(1_700_000_000, |_| Ok(()))
        .expect("create the first admin token")
        .expect("the store had no token yet");
    let api = tidegate_server::http::router(reader)
        .merge(tidegate_server::audit::routes(audit.clone()))
        .merge(tidegate_server::auth::routes(tokens.clone()));
    let app = tidegate_server::http::app(api, AuthState { tokens, audit });

    let address = serve(app);
    TestApi {
        base: format!("http://{address}"),
        token,
    }
}

/// Serves `app` without the token check, for tests of handlers alone, and returns the base URL.
pub fn spawn_app(app: axum::Router) -> String {
    format!("http://{}", serve(app))
}

/// Serves `app` on 127.0.0.1 at a free port, on a thread of its own that lives until the test
/// process ends.
fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("read the bound address");
    listener
        .set_nonblocking(true)
        .expect("make the listener non-blocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("adopt the listener");
            axum::serve(listener, app).await.expect("serve the API");
        });
    });
    address
}
