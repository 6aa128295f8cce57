//! The real `posthorn` binary as a user runs it (CONTRACT §2 bootstrap and keys, §6):
//! `serve` in child processes on free ports, `keys create` beside a running server.

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::api::helpers::{free_port, posthorn_bin, ChildGuard, TestDb};

/// The binary, with a clean environment (nothing `POSTHORN_*` leaks in from the host),
/// run in `dir`, killed if the test drops it.
fn posthorn(dir: &Path) -> Command {
    let mut cmd = Command::new(posthorn_bin());
    cmd.env_clear()
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs a command that should end by itself, within 30 s.
async fn run_to_end(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("command ends within 30 s")
        .expect("command runs")
}

/// `posthorn keys create` against `database`.
async fn keys_create(dir: &Path, database: &str, org: &str, role: &str) -> Output {
    let mut cmd = posthorn(dir);
    cmd.args([
        "keys",
        "create",
        "--org",
        org,
        "--role",
        role,
        "--database",
        database,
    ]);
    run_to_end(cmd).await
}

/// The key printed by a successful `keys create`: exactly one line on stdout.
#[track_caller]
fn printed_key(out: &Output) -> String {
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf8 stdout");
    assert!(
        out.status.success(),
        "keys create failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with('\n'), "stdout: {stdout:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must be the key alone: {stdout:?}");
    let key = lines[0];
    assert!(
        !key.is_empty() && !key.chars().any(char::is_whitespace),
        "stdout: {stdout:?}"
    );
    key.to_owned()
}

/// A failure a user can read: non-zero exit, one `posthorn: error: ...` line, last,
/// mentioning `mentions`, and no panic.
#[track_caller]
fn assert_clean_failure(out: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got {}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "panic on stderr: {stderr}");
    assert!(
        !stderr.to_lowercase().contains("backtrace"),
        "backtrace on stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("posthorn: error: "))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "expected one `posthorn: error:` line: {stderr}"
    );
    assert_eq!(
        lines.last().copied(),
        Some(errors[0]),
        "the error must be the last line: {stderr}"
    );
    assert!(
        errors[0].contains(mentions),
        "error should mention {mentions:?}: {stderr}"
    );
}

/// A running `posthorn serve` whose stderr is collected line by line.
struct Serve {
    child: Child,
    base: String,
    port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
    client: reqwest::Client,
    _guard: ChildGuard,
}

impl Serve {
    /// `posthorn serve` on `db` (with its master key, if it needs one) and a free port,
    /// with these extra variables, run in the test's dir.
    async fn start(db: &TestDb, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = posthorn(db.dir.path());
        cmd.arg("serve")
            .envs(db.env())
            .env("POSTHORN_LISTEN", format!("127.0.0.1:{port}"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, port).await
    }

    /// Spawns `cmd` (a `serve` listening on `port`) and waits until /healthz answers.
    async fn spawn(mut cmd: Command, port: u16) -> Self {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("posthorn serve starts");
        let pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("lock").push(line);
            }
        });
        let mut serve = Self {
            _guard: ChildGuard::new(child.id()),
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            stderr,
            reader,
            client: reqwest::Client::new(),
        };
        serve.wait_ready().await;
        serve
    }

    fn lines(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(resp) = self
                .client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
            {
                if resp.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "serve exited ({status}) before answering:\n{}",
                    self.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "serve did not answer /healthz within 10 s:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (≤ 5 s) for the first-start key banner and returns the key.
    async fn printed_key(&self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(key) = self.lines().iter().find_map(|l| key_in(l)) {
                return Some(key);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request with `Authorization: Basic <key>`: status and JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            req = req.header("Authorization", format!("Basic {key}"));
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends SIGTERM and waits for the exit (≤ 10 s) and the whole of stderr.
    async fn terminate(mut self) -> (ExitStatus, Duration, Vec<String>) {
        let pid = self.child.id().expect("still running").to_string();
        let started = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(kill.success());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("serve exits within 10 s of SIGTERM")
            .expect("wait");
        let took = started.elapsed();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
        (status, took, self.lines())
    }
}

/// The `ph_...` key on a stderr line, if any.
fn key_in(line: &str) -> Option<String> {
    let at = line.find("ph_")?;
    line[at..].split_whitespace().next().map(str::to_owned)
}

/// Number of endpoints `key` sees.
async fn endpoint_count(server: &Serve, key: &str) -> usize {
    let (status, body) = server
        .call(Method::GET, "/webhooks/v1/endpoints", Some(key), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body.get("endpoints")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

async fn key_count(server: &Serve, key: &str) -> usize {
    let (status, body) = server
        .call(Method::GET, "/webhooks/v1/keys", Some(key), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body.get("keys")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn first_start_prints_an_admin_key_once_and_it_works() {
    let db = TestDb::new().await;
    let server = Serve::start(&db, &[]).await;
    let key = server
        .printed_key()
        .await
        .unwrap_or_else(|| panic!("no ph_ key on stderr:\n{}", server.lines().join("\n")));

    // It is an admin key.
    let (status, body) = server
        .call(Method::GET, "/webhooks/v1/keys", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/keys",
            Some(&key),
            Some(&json!({"role": "standard"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(&key),
            Some(&json!({"url": "https://example.com/first-start"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A wrong key, to check it is not logged either.
    let (status, _) = server
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some("ph_not-a-real-key-0000"),
            None,
        )
        .await;
    assert_eq!(status, 401);

    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{status}");
    let with_key: Vec<&String> = lines.iter().filter(|l| l.contains(&key)).collect();
    assert_eq!(
        with_key.len(),
        1,
        "the key must appear once, in the banner:\n{}",
        lines.join("\n")
    );
    assert_eq!(with_key[0].trim(), key, "the banner line is the key alone");
    assert!(
        !lines.iter().any(|l| l.contains("ph_not-a-real-key")),
        "a presented key was logged:\n{}",
        lines.join("\n")
    );

    // On SQLite the master key file is private; a PostgreSQL node is given its key and
    // writes no file.
    let master = db.master_key_file();
    let master_bytes = master.as_ref().map(|master| {
        let mode = std::fs::metadata(master)
            .expect("master key file beside the database")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "{}",
            master.display()
        );
        std::fs::read(master).expect("read master key")
    });
    if let Some(given) = db.master_key() {
        assert_no_key_file(db.dir.path());
        assert!(
            !lines.iter().any(|l| l.contains(given)),
            "the master key was logged"
        );
    }

    // A restart prints no new key; the first one still works; the master key stays.
    let server = Serve::start(&db, &[]).await;
    assert_eq!(endpoint_count(&server, &key).await, 1);
    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        !lines.iter().any(|l| l.contains("ph_")),
        "a key was printed again on restart:\n{}",
        lines.join("\n")
    );
    if let (Some(master), Some(bytes)) = (master, master_bytes) {
        assert_eq!(std::fs::read(&master).expect("read master key"), bytes);
    }
}

/// No `*.master-key` file in `dir` (the working directory of a PostgreSQL node).
#[track_caller]
fn assert_no_key_file(dir: &Path) {
    let files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".master-key"))
        .collect();
    assert!(files.is_empty(), "key files written: {files:?}");
}

#[tokio::test]
async fn bootstrap_key_is_an_admin_of_the_bootstrap_org() {
    const BOOT: &str = "boot-secret-key-for-o-boot-0123456789";
    let db = TestDb::new().await;
    let env = [
        ("POSTHORN_BOOTSTRAP_KEY", BOOT),
        ("POSTHORN_BOOTSTRAP_ORG", "o-boot"),
    ];
    let server = Serve::start(&db, &env).await;
    let (status, body) = server
        .call(Method::GET, "/webhooks/v1/keys", Some(BOOT), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(BOOT),
            Some(&json!({"url": "https://example.com/boot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // It is in o-boot: another o-boot admin sees its endpoint; another org does not.
    let database = db.url.clone();
    let same_org = printed_key(&keys_create(db.dir.path(), &database, "o-boot", "admin").await);
    assert_eq!(endpoint_count(&server, &same_org).await, 1);
    let elsewhere =
        printed_key(&keys_create(db.dir.path(), &database, "o-elsewhere", "admin").await);
    assert_eq!(endpoint_count(&server, &elsewhere).await, 0);
    let keys = key_count(&server, BOOT).await;

    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        !lines.iter().any(|l| l.contains(BOOT)),
        "the bootstrap key was logged:\n{}",
        lines.join("\n")
    );
    assert!(
        !lines.iter().any(|l| l.contains("ph_")),
        "a key was minted although a bootstrap key was given:\n{}",
        lines.join("\n")
    );

    // A restart with the same key keeps one bootstrap key, still admin.
    let server = Serve::start(&db, &env).await;
    assert_eq!(key_count(&server, BOOT).await, keys);
    assert_eq!(endpoint_count(&server, BOOT).await, 1);
    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{status}");
    assert!(!lines.iter().any(|l| l.contains(BOOT)));
}

#[tokio::test]
async fn keys_create_works_beside_a_running_server() {
    const BOOT: &str = "boot-secret-key-for-o-x-0123456789";
    let db = TestDb::new().await;
    let server = Serve::start(
        &db,
        &[
            ("POSTHORN_BOOTSTRAP_KEY", BOOT),
            ("POSTHORN_BOOTSTRAP_ORG", "o-x"),
        ],
    )
    .await;

    // The server keeps writing while the CLI writes to the same database.
    let busy = async {
        for i in 0..60 {
            let (status, body) = server
                .call(
                    Method::POST,
                    "/webhooks/v1/event-types/metric.alert/subcategories",
                    Some(BOOT),
                    Some(&json!({"displayName": format!("s{i}")})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let database = db.url.clone();
    let ((), out) = tokio::join!(
        busy,
        keys_create(db.dir.path(), &database, "o-x", "publisher")
    );
    let key = printed_key(&out);

    // The running server knows it at once, with publisher rights.
    let (status, body) = server
        .call(Method::GET, "/webhooks/v1/event-types", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .call(
            Method::GET,
            "/webhooks/v1/event-types/metric.alert/subcategories",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["subcategoryDefs"].as_array().map(Vec::len),
        Some(60),
        "same org, same catalog"
    );
    for (method, path) in [
        (Method::GET, "/webhooks/v1/endpoints"),
        (Method::GET, "/webhooks/v1/keys"),
    ] {
        let (status, body) = server.call(method, path, Some(&key), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["code"], "forbidden");
    }
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(&key),
            Some(&json!({"url": "https://example.com/p"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // The org's admin sees the new key in the list, as a publisher key.
    let (_, body) = server
        .call(Method::GET, "/webhooks/v1/keys", Some(BOOT), None)
        .await;
    assert!(
        body["keys"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k["role"] == "publisher")),
        "{body}"
    );

    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        !lines.iter().any(|l| l.contains(&key) || l.contains(BOOT)),
        "a key was logged:\n{}",
        lines.join("\n")
    );
}

#[tokio::test]
async fn keys_create_refuses_a_bad_role_or_org() {
    let db = TestDb::new().await;
    let database = db.url.clone();
    for (org, role) in [("o-x", "root"), ("o-x", "ADMIN"), ("bad org!", "admin")] {
        let out = keys_create(db.dir.path(), &database, org, role).await;
        assert!(
            !out.status.success(),
            "{org} {role}: exit {}; stdout {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.stdout.is_empty(),
            "no key may be printed: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "say why on stderr");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

sqlite_only! {
#[tokio::test]
async fn serve_with_an_unusable_database_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing_dir = format!("sqlite://{}", dir.path().join("no/such/dir/x.db").display());
    for url in ["mysql://x", missing_dir.as_str()] {
        let mut cmd = posthorn(dir.path());
        cmd.arg("serve")
            .env("POSTHORN_DATABASE_URL", url)
            .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()));
        let out = run_to_end(cmd).await;
        assert_clean_failure(&out, "database");
    }
}
}

#[tokio::test]
async fn serve_on_a_busy_port_fails_cleanly() {
    let db = TestDb::new().await;
    let taken = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut cmd = posthorn(db.dir.path());
    cmd.arg("serve")
        .envs(db.env())
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{port}"))
        .env("POSTHORN_BOOTSTRAP_KEY", "busy-port-key-0123456789");
    let out = run_to_end(cmd).await;
    assert_clean_failure(&out, &port.to_string());
    drop(taken);
}

#[tokio::test]
async fn sigterm_stops_serve_promptly_with_exit_0() {
    let db = TestDb::new().await;
    let server = Serve::start(&db, &[("POSTHORN_BOOTSTRAP_KEY", "sigterm-key-0123")]).await;
    let (status, _) = server
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some("sigterm-key-0123"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let port = server.port;
    let (status, took, lines) = server.terminate().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}:\n{}",
        lines.join("\n")
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after exit"
    );
}

#[tokio::test]
async fn every_serve_option_is_also_a_flag() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut cmd = posthorn(db.dir.path());
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--database",
        &db.url,
        "--bootstrap-key",
        "flag-key-0123456789",
        "--bootstrap-org",
        "o-flag",
    ]);
    if let Some(key) = db.master_key() {
        cmd.args(["--master-key", key]);
    }
    let server = Serve::spawn(cmd, port).await;
    let (status, body) = server
        .call(
            Method::GET,
            "/webhooks/v1/keys",
            Some("flag-key-0123456789"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = server.terminate().await;
    assert!(status.success());
    if let Some(file) = db.sqlite_file() {
        assert!(file.exists(), "database not where --database said");
    } else {
        assert_no_key_file(db.dir.path());
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_without_keys() {
    const BOOT: &str = "json-log-key-0123456789";
    let db = TestDb::new().await;
    let server = Serve::start(
        &db,
        &[
            ("POSTHORN_BOOTSTRAP_KEY", BOOT),
            ("POSTHORN_LOG_FORMAT", "json"),
        ],
    )
    .await;
    for path in ["/webhooks/v1/endpoints", "/webhooks/v1/nope"] {
        server.call(Method::GET, path, Some(BOOT), None).await;
    }
    let (status, _, lines) = server.terminate().await;
    assert!(status.success());
    let lines: Vec<&String> = lines.iter().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines at all");
    for line in lines {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(parsed.is_object(), "{line}");
        assert!(!line.contains(BOOT), "key logged: {line}");
    }
}

#[tokio::test]
async fn no_key_or_secret_is_logged_even_at_trace_level() {
    const BOOT: &str = "trace-level-key-0123456789";
    const SECRET: &str = "endpoint-secret-value-0123456789";
    let db = TestDb::new().await;
    let server = Serve::start(
        &db,
        &[("POSTHORN_BOOTSTRAP_KEY", BOOT), ("POSTHORN_LOG", "trace")],
    )
    .await;
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(BOOT),
            Some(&json!({"url": "https://example.com/given", "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, minted) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(BOOT),
            Some(&json!({"url": "https://example.com/minted"})),
        )
        .await;
    assert_eq!(status, 200, "{minted}");
    let minted_secret = minted["secret"]
        .as_str()
        .expect("a minted secret in the Create answer")
        .to_owned();
    let (status, created) = server
        .call(
            Method::POST,
            "/webhooks/v1/keys",
            Some(BOOT),
            Some(&json!({"role": "publisher"})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let new_key = created["key"].as_str().expect("key").to_owned();
    server
        .call(
            Method::GET,
            "/webhooks/v1/event-types",
            Some(&new_key),
            None,
        )
        .await;
    server
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some("wrong-key-presented-0123"),
            None,
        )
        .await;

    let (status, _, lines) = server.terminate().await;
    assert!(status.success());
    assert!(lines.len() > 5, "trace logging produced almost nothing");
    // The master key: given (PostgreSQL) or in its file (SQLite).
    let master = db.master_key().map(str::to_owned).or_else(|| {
        let text = std::fs::read_to_string(db.master_key_file()?).ok()?;
        Some(text.trim().to_owned()).filter(|t| t.len() >= 16)
    });
    for secret in [
        BOOT,
        SECRET,
        &minted_secret,
        &new_key,
        "wrong-key-presented-0123",
    ]
    .into_iter()
    .chain(master.as_deref())
    {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret:?} appears in the log: {leaks:?}");
    }
}

#[tokio::test]
async fn text_logs_to_a_pipe_have_no_terminal_escapes() {
    // Logs are for people by default; written to a file or a pipe (journald, docker,
    // `2>log`) they must not carry ANSI colour codes, which also break grep on
    // `key=value` fields.
    let db = TestDb::new().await;
    let server = Serve::start(&db, &[("POSTHORN_BOOTSTRAP_KEY", "ansi-key-0123")]).await;
    server
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some("ansi-key-0123"),
            None,
        )
        .await;
    let (status, _, lines) = server.terminate().await;
    assert!(status.success());
    assert!(
        lines.iter().any(|l| l.contains("/webhooks/v1/endpoints")),
        "no request log line:\n{}",
        lines.join("\n")
    );
    let escaped: Vec<&String> = lines.iter().filter(|l| l.contains('\u{1b}')).collect();
    assert!(
        escaped.is_empty(),
        "ANSI escape codes in logs written to a pipe: {:?}",
        escaped.first()
    );
}

sqlite_only! {
#[tokio::test]
async fn default_database_is_posthorn_db_in_the_working_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = posthorn(dir.path());
    cmd.arg("serve")
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{port}"))
        .env("POSTHORN_BOOTSTRAP_KEY", "default-db-key-0123");
    let server = Serve::spawn(cmd, port).await;
    let (status, _) = server
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some("default-db-key-0123"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = server.terminate().await;
    assert!(status.success());
    assert!(dir.path().join("posthorn.db").exists(), "no ./posthorn.db");
    assert!(
        dir.path().join("posthorn.db.master-key").exists(),
        "no key file beside the default database"
    );
}
}

#[tokio::test]
async fn a_given_master_key_is_used_and_a_wrong_one_is_refused_cleanly() {
    let db = TestDb::new().await;
    let first = "11".repeat(32);
    let server = Serve::start(
        &db,
        &[
            ("POSTHORN_MASTER_KEY", &first),
            ("POSTHORN_BOOTSTRAP_KEY", "master-key-test-0123"),
        ],
    )
    .await;
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some("master-key-test-0123"),
            Some(
                &json!({"url": "https://example.com/sealed", "secret": "sealed-secret-0123456789"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, lines) = server.terminate().await;
    assert!(status.success());
    assert_no_key_file(db.dir.path());
    assert!(
        !lines.iter().any(|l| l.contains(&first)),
        "master key logged"
    );

    // The same database with another master key would garble every secret: refuse to start.
    let second = "22".repeat(32);
    let mut cmd = posthorn(db.dir.path());
    cmd.arg("serve")
        .envs(db.env())
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("POSTHORN_MASTER_KEY", &second)
        .env("POSTHORN_BOOTSTRAP_KEY", "master-key-test-0123");
    let out = run_to_end(cmd).await;
    assert_clean_failure(&out, "master key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(&second) && !stderr.contains(&first));

    // The right key still works.
    let server = Serve::start(
        &db,
        &[
            ("POSTHORN_MASTER_KEY", &first),
            ("POSTHORN_BOOTSTRAP_KEY", "master-key-test-0123"),
        ],
    )
    .await;
    assert_eq!(endpoint_count(&server, "master-key-test-0123").await, 1);
    let (status, _, _) = server.terminate().await;
    assert!(status.success());
}

postgres_only! {
#[tokio::test]
async fn serve_on_postgres_without_a_master_key_fails_cleanly() {
    // Nodes sharing a database must share the key, so none is made up (CONTRACT §6).
    let db = TestDb::new().await;
    let mut cmd = posthorn(db.dir.path());
    cmd.arg("serve")
        .env("POSTHORN_DATABASE_URL", &db.url)
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("POSTHORN_BOOTSTRAP_KEY", "no-master-key-0123456789");
    let out = run_to_end(cmd).await;
    assert_clean_failure(&out, "POSTHORN_MASTER_KEY");
    assert_no_key_file(db.dir.path());
}

#[tokio::test]
async fn serve_on_an_unreachable_or_missing_postgres_database_fails_cleanly() {
    let db = TestDb::new().await;
    let cluster = crate::api::pg::PgCluster::shared();
    let nobody = format!("postgres://postgres@127.0.0.1:{}/posthorn", free_port());
    let missing = cluster.url("no_such_database");
    for url in [nobody.as_str(), missing.as_str()] {
        let mut cmd = posthorn(db.dir.path());
        cmd.arg("serve")
            .envs(db.env())
            .env("POSTHORN_DATABASE_URL", url)
            .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()));
        let out = run_to_end(cmd).await;
        assert_clean_failure(&out, "PostgreSQL");
    }
}

#[tokio::test]
async fn migrate_and_keys_create_work_on_a_fresh_postgres_database() {
    let db = TestDb::new().await;
    for _ in 0..2 {
        let mut cmd = posthorn(db.dir.path());
        cmd.args(["migrate", "--database", &db.url]);
        let out = run_to_end(cmd).await;
        assert!(
            out.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let key = printed_key(&keys_create(db.dir.path(), &db.url, "o-cli", "admin").await);
    let server = Serve::start(&db, &[("POSTHORN_BOOTSTRAP_ORG", "o-cli")]).await;
    assert_eq!(
        key_count(&server, &key).await,
        1,
        "no bootstrap key was minted"
    );
    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{}", lines.join("\n"));
    assert!(
        !lines.iter().any(|l| l.contains("ph_")),
        "a key was minted although one existed:\n{}",
        lines.join("\n")
    );
}
}
