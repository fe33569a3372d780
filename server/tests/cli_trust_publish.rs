//! `tidegate bundle publish` against a one-request HTTP server on 127.0.0.1 that records the
//! request and returns a fixed response.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::thread::{self, JoinHandle};

fn tidegate(dir: &Path, args: &[&str], user: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .current_dir(dir)
        .env_remove("TIDEGATE_SERVER")
        .env("USER", user)
        .output()
        .expect("run tidegate")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn run_ok(dir: &Path, args: &[&str]) -> String {
    let output = tidegate(dir, args, "tester");
    assert!(
        output.status.success(),
        "tidegate {args:?} failed\nstdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// One HTTP request as the server received it.
struct ReceivedRequest {
    request_line: String,
    /// Header names in lowercase, with their values.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl ReceivedRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Serves one request on 127.0.0.1 with `status` and the JSON `body`, and returns the base URL
/// and a handle that yields the request.
fn serve_once(status: &'static str, body: &'static str) -> (String, JoinHandle<ReceivedRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_lowercase(), value.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map(|(_, value)| value.parse().unwrap())
            .expect("the request has a Content-Length");
        let mut request_body = vec![0; length];
        reader.read_exact(&mut request_body).unwrap();

        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        stream.flush().unwrap();
        ReceivedRequest {
            request_line: request_line.trim_end().to_owned(),
            headers,
            body: request_body,
        }
    });
    (base, handle)
}

/// Writes a security key and a bundle signed by it; returns the directory and the key id.
fn signed_bundle() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    run_ok(
        path,
        &["keys", "generate", "--role", "security", "--out", "s1.key"],
    );
    let line = run_ok(path, &["keys", "show", "--public", "s1.key"]);
    let key_id = line.split(' ').nth(1).unwrap().to_owned();
    fs::write(
        path.join("steps.json"),
        r#"[{"LockAccount": {"user": "guest"}}]"#,
    )
    .unwrap();
    run_ok(
        path,
        &[
            "bundle",
            "new",
            "--out",
            "b.tgb",
            "--id",
            "lock-guest",
            "--stream",
            "accounts",
            "--sequence",
            "3",
            "--not-before",
            "2026-05-01T00:00:00Z",
            "--expires",
            "2026-06-01T00:00:00Z",
            "--steps",
            "steps.json",
        ],
    );
    run_ok(path, &["bundle", "sign", "b.tgb", "--key", "s1.key"]);
    (dir, key_id)
}

#[test]
fn publish_sends_bytes_and_publisher() {
    let (dir, key_id) = signed_bundle();
    // The response is fixed, so its signer need not be the bundle's.
    let (base, server) = serve_once(
        "201 Created",
        r#"{"bundle_id":"lock-guest","stream":"accounts","sequence":3,"bundle_hash":"ab12","signers":["1111222233334444"],"delivered_to":4,"republished":false,"immediate":true}"#,
    );

    let output = tidegate(
        dir.path(),
        &[
            "--server",
            &base,
            "bundle",
            "publish",
            "b.tgb",
            "--publisher",
            "alice@desk-1",
            "--immediate",
        ],
        "tester",
    );
    let request = server.join().unwrap();

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(
        request.request_line,
        "POST /api/v1/bundles?delivery=immediate HTTP/1.1"
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(request.header("x-tidegate-publisher"), Some("alice@desk-1"));
    assert_eq!(request.body, fs::read(dir.path().join("b.tgb")).unwrap());
    let text = stdout(&output);
    assert!(
        text.starts_with(
            "published bundle lock-guest (stream accounts, sequence 3) signed by \
             1111222233334444; sent to 4 agents\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains(&key_id),
        "the output repeats the server's signers only"
    );
}

#[test]
fn publish_without_immediate_is_held() {
    let (dir, _) = signed_bundle();
    let (base, server) = serve_once(
        "201 Created",
        r#"{"bundle_id":"lock-guest","stream":"accounts","sequence":3,"bundle_hash":"ab12","signers":["1111222233334444"],"delivered_to":0,"republished":false,"immediate":false}"#,
    );
    let output = tidegate(
        dir.path(),
        &["--server", &base, "bundle", "publish", "b.tgb"],
        "tester",
    );
    let request = server.join().unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(request.request_line, "POST /api/v1/bundles HTTP/1.1");
    assert!(
        stdout(&output).starts_with(
            "published bundle lock-guest (stream accounts, sequence 3) signed by \
             1111222233334444; held for a rollout (tidegate rollout start lock-guest)\n"
        ),
        "{}",
        stdout(&output)
    );
}

#[test]
fn publish_defaults_publisher_to_user_at_host() {
    let (dir, _) = signed_bundle();
    let (base, server) = serve_once(
        "201 Created",
        r#"{"bundle_id":"lock-guest","stream":"accounts","sequence":3,"bundle_hash":"ab12","signers":[],"delivered_to":0}"#,
    );

    let output = tidegate(
        dir.path(),
        &["--server", &base, "bundle", "publish", "b.tgb"],
        "carol",
    );
    let request = server.join().unwrap();

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let publisher = request.header("x-tidegate-publisher").unwrap();
    assert!(publisher.starts_with("carol@"), "{publisher}");
    assert!(publisher.len() > "carol@".len(), "{publisher}");
}

#[test]
fn publish_rejection_prints_rule_and_exits_1() {
    let (dir, _) = signed_bundle();
    let (base, server) = serve_once(
        "422 Unprocessable Entity",
        r#"{"error":"bundle rejected (expired): bundle lock-guest expired at 2026-06-01T00:00:00Z","rule":"expired"}"#,
    );

    let output = tidegate(
        dir.path(),
        &["--server", &base, "bundle", "publish", "b.tgb"],
        "tester",
    );
    server.join().unwrap();

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "");
    let error = stderr(&output);
    assert!(
        error.contains("rejected bundle b.tgb with status 422"),
        "{error}"
    );
    assert!(
        error.contains("bundle lock-guest expired at 2026-06-01T00:00:00Z (rule expired)"),
        "{error}"
    );
}

#[test]
fn publish_to_closed_port_fails() {
    let (dir, _) = signed_bundle();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let output = tidegate(
        dir.path(),
        &["--server", &base, "bundle", "publish", "b.tgb"],
        "tester",
    );

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot reach tidegate server"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn publish_rejects_file_that_is_not_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "not a bundle").unwrap();

    let output = tidegate(
        dir.path(),
        &[
            "--server",
            "http://127.0.0.1:9",
            "bundle",
            "publish",
            "notes.txt",
        ],
        "tester",
    );

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("invalid bundle file notes.txt"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn rollback_posts_hash_of_bundle_file() {
    let (dir, _) = signed_bundle();
    let inspected = run_ok(dir.path(), &["bundle", "inspect", "--json", "b.tgb"]);
    let hash = serde_json::from_str::<serde_json::Value>(&inspected).unwrap()["bundle_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let (base, server) = serve_once(
        "202 Accepted",
        r#"{"agent_id":"3f2a0c9d11e4b5a6c7d8e9f0a1b2c3d4","bundle_hash":"x","order_id":"y"}"#,
    );

    let output = tidegate(
        dir.path(),
        &[
            "--server",
            &base,
            "bundle",
            "rollback",
            "b.tgb",
            "--agent",
            "3f2a0c9d11e4b5a6c7d8e9f0a1b2c3d4",
        ],
        "tester",
    );
    let request = server.join().unwrap();

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(
        request.request_line,
        "POST /api/v1/agents/3f2a0c9d11e4b5a6c7d8e9f0a1b2c3d4/rollback HTTP/1.1"
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["bundle_hash"], hash.as_str());
    assert!(
        stdout(&output).starts_with(&format!("sent a rollback order for bundle {hash}")),
        "{}",
        stdout(&output)
    );
}

#[test]
fn rollback_reports_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let agent = "0123456789abcdef0123456789abcdef";
    let (base, server) = serve_once(
        "404 Not Found",
        r#"{"error":"agent \"0123456789abcdef0123456789abcdef\" not found"}"#,
    );
    let hash = "ab".repeat(32);

    let output = tidegate(
        dir.path(),
        &[
            "--server", &base, "bundle", "rollback", &hash, "--agent", agent,
        ],
        "tester",
    );
    server.join().unwrap();

    assert_ne!(output.status.code(), Some(0));
    let error = stderr(&output);
    assert!(error.contains("HTTP 404"), "{error}");
    assert!(
        error.contains(&format!("agent \"{agent}\" not found")),
        "{error}"
    );
}

#[test]
fn rollback_names_a_value_that_is_no_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let output = tidegate(
        dir.path(),
        &[
            "--server",
            "http://127.0.0.1:9",
            "bundle",
            "rollback",
            "deadbeef",
            "--agent",
            "0123456789abcdef0123456789abcdef",
        ],
        "tester",
    );

    assert_eq!(output.status.code(), Some(1));
    let error = stderr(&output);
    assert!(
        error.contains(
            "\"deadbeef\" is neither a bundle hash (64 hex digits) nor an existing bundle file"
        ),
        "{error}"
    );
}
