//! Roles and tokens on a whole server. Every route of the role table accepts or rejects each
//! role as the table lists. Tokens are stored hashed, and revoked tokens stop working. What changed
//! is in the audit log, which verifies through the API.

mod ingest_support;

use std::os::unix::fs::PermissionsExt;

use ingest_support::*;
use ring::digest::{digest, SHA256};
use serde_json::{json, Value};
use tidegate_server::auth::{Role, ROUTE_ROLES};

/// Sends `method path` with `token` (or none) and `body` as JSON. Returns the status and the
/// response body as JSON (`Null` when it is not JSON).
async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", server.http);
    let method = method.to_owned();
    let token = token.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut request = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let sent = match body {
            Some(body) => agent.run(
                request
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
                    .unwrap(),
            ),
            None => agent.run(request.body(()).unwrap()),
        };
        let mut response = sent.expect("send the request");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

/// Creates a token with `role` through the API and returns its text.
async fn create_token(server: &TestServer, name: &str, role: &str) -> String {
    let (status, body) = call(
        server,
        "POST",
        "/api/v1/tokens",
        Some(&server.token),
        Some(json!({"name": name, "role": role})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], name);
    assert_eq!(body["role"], role);
    body["token"].as_str().unwrap().to_owned()
}

/// Replaces each `{parameter}` of a route template with a value no test creates.
fn concrete_path(template: &str) -> String {
    template
        .split('/')
        .map(|part| {
            if part.starts_with('{') {
                "no-such-name"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn route_table_is_enforced_per_role() {
    let server = TestServer::embedded().await;
    let mut tokens = Vec::new();
    for role in [Role::It, Role::Ot, Role::Security, Role::Viewer] {
        let token = create_token(&server, &format!("{role}-user"), role.as_str()).await;
        tokens.push((role, token));
    }
    tokens.push((Role::Admin, server.token.clone()));

    let writes = ROUTE_ROLES
        .iter()
        .filter(|rule| rule.method != "GET")
        .count();
    // Bundles, trust root, token creation and revocation; other parts add theirs.
    assert!(writes >= 4, "the table lists {writes} write routes");
    for rule in ROUTE_ROLES {
        let path = concrete_path(rule.path);
        let body = (rule.method != "GET").then(|| json!({}));
        for (role, token) in &tokens {
            let (status, response) =
                call(&server, rule.method, &path, Some(token), body.clone()).await;
            let allowed = *role == Role::Admin || rule.roles.contains(role);
            if allowed {
                assert!(
                    status != 401 && status != 403,
                    "{role} may {} {}, got {status} {response}",
                    rule.method,
                    rule.path
                );
            } else {
                assert_eq!(
                    status, 403,
                    "{role} must not {} {}: {response}",
                    rule.method, rule.path
                );
                let error = response["error"].as_str().unwrap();
                assert!(
                    error.contains(&format!("role {role} may not {}", rule.method)),
                    "{error}"
                );
            }
        }
        // Without a token, every route returns 401.
        let (status, _) = call(&server, rule.method, &path, None, body.clone()).await;
        assert_eq!(status, 401, "{} {} without a token", rule.method, rule.path);
    }

    // The viewer is refused every write, whether the table lists it or not.
    let viewer = &tokens[3].1;
    for rule in ROUTE_ROLES.iter().filter(|rule| rule.method != "GET") {
        let (status, _) = call(
            &server,
            rule.method,
            &concrete_path(rule.path),
            Some(viewer),
            Some(json!({})),
        )
        .await;
        assert_eq!(status, 403, "viewer {} {}", rule.method, rule.path);
    }
    server.stop().await;
}

#[tokio::test]
async fn revoked_token_is_refused() {
    let server = TestServer::embedded().await;
    let token = create_token(&server, "ot-line-3", "ot").await;
    let (status, _) = call(&server, "GET", "/api/v1/agents", Some(&token), None).await;
    assert_eq!(status, 200);

    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/tokens/ot-line-3/revoke",
        Some(&server.token),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "ot-line-3");
    assert!(body["revoked_at_unix_s"].is_i64(), "{body}");

    let (status, body) = call(&server, "GET", "/api/v1/agents", Some(&token), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "the token is unknown or revoked");

    // Revoking twice, an unknown name, and the last admin token are refused.
    let revoke = |name: &str| format!("/api/v1/tokens/{name}/revoke");
    let admin = Some(server.token.as_str());
    let (status, _) = call(&server, "POST", &revoke("ot-line-3"), admin, None).await;
    assert_eq!(status, 409);
    let (status, _) = call(&server, "POST", &revoke("nobody"), admin, None).await;
    assert_eq!(status, 404);
    let (status, body) = call(&server, "POST", &revoke("admin"), admin, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("last admin token"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_stored_hashed_only() {
    let server = TestServer::embedded().await;
    let security = create_token(&server, "sec-1", "security").await;
    let (status, body) = call(&server, "GET", "/api/v1/tokens", Some(&server.token), None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| token["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "sec-1"]);
    assert!(!body.to_string().contains("tg_"), "{body}");
    let dir = server.stop().await;

    let db = dir.path().join("tidegate.db");
    let connection = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(String, String)> = connection
        .prepare("SELECT name, token_hash FROM tokens ORDER BY name")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let admin_token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let sha256 = |text: &str| -> String {
        digest(&SHA256, text.as_bytes())
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    };
    assert_eq!(
        rows,
        vec![
            ("admin".to_owned(), sha256(admin_token.trim())),
            ("sec-1".to_owned(), sha256(&security)),
        ]
    );
    drop(connection);

    // Neither token appears anywhere in the store files, WAL included.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "admin.token" {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for token in [admin_token.trim(), security.as_str()] {
            assert!(
                !bytes
                    .windows(token.len())
                    .any(|window| window == token.as_bytes()),
                "{} contains a token",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn first_admin_token_is_written_once() {
    let server = TestServer::embedded().await;
    let file = server.dir.path().join("admin.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = std::fs::read_to_string(&file).unwrap();
    assert!(first.starts_with("tg_"), "{first}");
    assert!(first.ends_with('\n'), "{first}");
    let dir = server.stop().await;

    let written = std::fs::metadata(&file).unwrap().modified().unwrap();
    let server = TestServer::start_in(dir, embedded_broker(), Default::default()).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        written
    );
    let (status, body) = call(&server, "GET", "/api/v1/tokens", Some(&server.token), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["tokens"].as_array().unwrap().len(), 1, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn changes_audited_and_verified_via_api() {
    let server = TestServer::embedded().await;
    let viewer = create_token(&server, "auditor", "viewer").await;
    let (status, _) = call(
        &server,
        "POST",
        "/api/v1/bundles",
        Some(&viewer),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403);

    let (status, page) = call(&server, "GET", "/api/v1/audit?after=0", Some(&viewer), None).await;
    assert_eq!(status, 200, "{page}");
    let entries = page.as_array().unwrap();
    let summary: Vec<(u64, &str, &str, &str)> = entries
        .iter()
        .map(|entry| {
            (
                entry["seq"].as_u64().unwrap(),
                entry["actor"].as_str().unwrap(),
                entry["action"].as_str().unwrap(),
                entry["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "server", "token.created", "admin"),
            (2, "token:admin/admin", "token.created", "auditor"),
            (3, "token:admin/admin", "api.request", "/api/v1/tokens"),
            (4, "token:auditor/viewer", "api.denied", "/api/v1/bundles"),
        ]
    );
    assert_eq!(
        entries[1]["detail"],
        json!({"name": "auditor", "role": "viewer"})
    );
    assert_eq!(
        entries[2]["detail"],
        json!({"method": "POST", "path": "/api/v1/tokens", "status": 201})
    );
    assert_eq!(entries[1]["prev_hash"], entries[0]["hash"]);

    let (status, page) = call(
        &server,
        "GET",
        "/api/v1/audit?after=2&limit=1",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["seq"], 3);
    let (status, _) = call(&server, "GET", "/api/v1/audit?limit=0", Some(&viewer), None).await;
    assert_eq!(status, 400);

    let output = run_tidegate(&server, &viewer, &["audit", "verify"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("audit log intact: 4 entries; the newest is entry 4 with hash "),
        "{stdout}"
    );

    // An edit of the file while the server runs shows through the API as well.
    let db = server.dir.path().join("tidegate.db");
    let connection = rusqlite::Connection::open(&db).unwrap();
    connection
        .execute_batch(
            "DROP TRIGGER audit_log_no_update;
             UPDATE audit_log SET detail = replace(detail, 'viewer', 'admin') WHERE seq = 2;",
        )
        .unwrap();
    drop(connection);
    let output = run_tidegate(&server, &viewer, &["audit", "verify"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "entry 2 was altered: its content does not match its hash\n"
    );
    server.stop().await;
}

/// Runs the `tidegate` binary against `server` with `token`, off the async runtime's threads.
async fn run_tidegate(server: &TestServer, token: &str, args: &[&str]) -> std::process::Output {
    let base = format!("http://{}", server.http);
    let token = token.to_owned();
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .arg("--server")
            .arg(&base)
            .args(&args)
            .env("TIDEGATE_TOKEN", &token)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn tokens_commands_round_trip() {
    let server = TestServer::embedded().await;
    let admin = server.token.clone();

    let output = run_tidegate(
        &server,
        &admin,
        &["tokens", "create", "--role", "ot", "--name", "line-3"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0));
    let token = String::from_utf8(output.stdout).unwrap();
    assert!(token.starts_with("tg_"), "{token}");
    assert_eq!(token.len(), 3 + 64 + 1, "the token and a newline: {token}");
    let note = String::from_utf8_lossy(&output.stderr);
    assert!(note.contains("created token line-3 with role ot"), "{note}");

    let output = run_tidegate(&server, token.trim(), &["fleet", "list", "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "the new token reads");

    let output = run_tidegate(&server, &admin, &["tokens", "list"]).await;
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].starts_with("admin "), "{table}");
    assert!(lines[2].starts_with("line-3 "), "{table}");
    assert!(lines[2].contains(" ot "), "{table}");
    assert!(lines[2].contains("token:admin/admin"), "{table}");

    let output = run_tidegate(
        &server,
        &admin,
        &["tokens", "create", "--role", "root", "--name", "x"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("invalid role \"root\""), "{message}");

    let output = run_tidegate(&server, &admin, &["tokens", "revoke", "line-3"]).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "revoked token line-3 (role ot); the server no longer accepts it\n"
    );

    let output = run_tidegate(&server, token.trim(), &["fleet", "list"]).await;
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("did not accept the API token: the token is unknown or revoked"),
        "{message}"
    );

    let output = run_tidegate(&server, token.trim(), &["tokens", "list"]).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "a revoked token lists nothing"
    );
    server.stop().await;
}

/// Finds every `.route(PATH, METHODS)` call in the server's source, with `PATH` a string literal
/// or a `const` of the same file, and returns each `(METHOD, PATH)` it registers for a write
/// method. axum cannot list a router's routes, so the source is the list. The live check in
/// [`every_write_route_is_in_the_table`] proves each one found is a route of the running server.
fn registered_write_routes() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut directories = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                directories.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }

    let mut routes = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        for (start, _) in source.match_indices(".route(") {
            let call = &source[start + ".route(".len()..];
            let (path_argument, rest) = call.split_once(',').unwrap();
            let path_argument = path_argument.trim();
            let path = match path_argument.strip_prefix('"') {
                Some(literal) => literal.trim_end_matches('"').to_owned(),
                None => {
                    let declaration = format!("const {path_argument}: &str = \"");
                    let at = source
                        .find(&declaration)
                        .unwrap_or_else(|| panic!("{}: no const {path_argument}", file.display()));
                    let value = &source[at + declaration.len()..];
                    value[..value.find('"').unwrap()].to_owned()
                }
            };
            // The method router ends at the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|(_, character)| {
                    match character {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(index, _)| index)
                .unwrap();
            let methods = &rest[..end];
            for method in ["post", "put", "delete", "patch"] {
                let called = methods.match_indices(&format!("{method}(")).any(|(at, _)| {
                    methods[..at]
                        .chars()
                        .last()
                        .is_none_or(|before| !before.is_alphanumeric() && before != '_')
                });
                if called && path.starts_with("/api/") {
                    routes.push((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    routes.sort();
    routes.dedup();
    routes
}

#[tokio::test]
async fn every_write_route_is_in_the_table() {
    let routes = registered_write_routes();
    // Each write route with the roles besides admin that own it.
    let expected: &[(&str, &str, &[Role])] = &[
        ("POST", "/api/v1/agents/{agent_id}/owner", &[Role::It]),
        ("POST", "/api/v1/agents/{agent_id}/rollback", &[Role::It]),
        ("POST", "/api/v1/bundles", &[Role::Security]),
        ("POST", "/api/v1/rollouts", &[Role::It]),
        ("POST", "/api/v1/rollouts/stop-all", &[Role::It]),
        ("POST", "/api/v1/rollouts/{id}/pause", &[Role::It]),
        ("POST", "/api/v1/rollouts/{id}/resume", &[Role::It]),
        ("POST", "/api/v1/rollouts/{id}/stop", &[Role::It]),
        ("POST", "/api/v1/schedules", &[Role::Ot]),
        ("POST", "/api/v1/tokens", &[]),
        ("POST", "/api/v1/tokens/{name}/revoke", &[]),
        ("POST", "/api/v1/trust-root", &[Role::Security]),
    ];
    let found: Vec<(&str, &str)> = routes
        .iter()
        .map(|(method, path)| (method.as_str(), path.as_str()))
        .collect();
    let expected_routes: Vec<(&str, &str)> = expected
        .iter()
        .map(|(method, path, _)| (*method, *path))
        .collect();
    assert_eq!(
        found, expected_routes,
        "the write routes in the source; a new one needs its line in ROUTE_ROLES and here"
    );

    for (method, path, roles) in expected {
        let listed = ROUTE_ROLES
            .iter()
            .find(|rule| rule.method == *method && rule.path == *path);
        let listed = listed.unwrap_or_else(|| panic!("{method} {path} is not in ROUTE_ROLES"));
        assert_eq!(listed.roles, *roles, "roles of {method} {path}");
    }

    // Each route found is a route of the running server: it returns 401 without a token and
    // 403 to a viewer, where an unknown route would return 404 or 405.
    let server = TestServer::embedded().await;
    let viewer = create_token(&server, "viewer-1", "viewer").await;
    for (method, path) in &found {
        let concrete = concrete_path(path);
        let (status, _) = call(&server, method, &concrete, None, Some(json!({}))).await;
        assert_eq!(status, 401, "{method} {path} without a token");
        let (status, _) = call(&server, method, &concrete, Some(&viewer), Some(json!({}))).await;
        assert_eq!(status, 403, "viewer {method} {path}");
    }
    server.stop().await;
}
