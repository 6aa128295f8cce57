//! Test harness: a real posthorn server on port 0 with a fresh store per test (an SQLite
//! file, or a database of its own in the shared PostgreSQL cluster, by
//! [`crate::BACKEND`]), driven over real HTTP; and real `posthorn serve` processes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use posthorn::app::Server;
use posthorn::config::ServeConfig;
use reqwest::Method;
use serde_json::Value;
use sqlx::Row;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::api::pg::PgCluster;

/// The store a test binary runs its suite on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const ORG: &str = "o-test";
/// The master key of every PostgreSQL test database (64 hex digits). On SQLite the
/// tests leave it unset, so the key file beside the database is used.
pub const MASTER_KEY: &str = "8f3a1c5e7b9d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a";

/// A store for one test: an SQLite file in a temp dir, or a fresh database in the
/// shared PostgreSQL cluster.
pub struct TestDb {
    pub url: String,
    /// A temp dir of the test's own (the SQLite file is in it; on PostgreSQL it is empty).
    pub dir: TempDir,
}

impl TestDb {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = match crate::BACKEND {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("test.db").display()),
            Backend::Postgres => PgCluster::shared().create_database().await,
        };
        Self { url, dir }
    }

    /// The master key a server on this store is given (`None` on SQLite: the key file).
    pub fn master_key(&self) -> Option<&'static str> {
        master_key_for(&self.url)
    }

    /// The SQLite file, if the store is one.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        self.url.strip_prefix("sqlite://").map(PathBuf::from)
    }

    /// Where the server keeps its master key when none is given (SQLite only).
    pub fn master_key_file(&self) -> Option<PathBuf> {
        let mut path = self.sqlite_file()?.into_os_string();
        path.push(".master-key");
        Some(path.into())
    }

    /// `POSTHORN_DATABASE_URL` and, where the store needs one, `POSTHORN_MASTER_KEY`, for
    /// a `posthorn` process on this store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("POSTHORN_DATABASE_URL", self.url.clone())];
        if let Some(key) = self.master_key() {
            env.push(("POSTHORN_MASTER_KEY", key.to_owned()));
        }
        env
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if crate::BACKEND == Backend::Postgres {
            if let Some(name) = self.url.rsplit('/').next() {
                PgCluster::shared().drop_database_later(name);
            }
        }
    }
}

/// [`MASTER_KEY`] for PostgreSQL URLs, nothing for SQLite.
pub fn master_key_for(url: &str) -> Option<&'static str> {
    url.starts_with("postgres").then_some(MASTER_KEY)
}

/// The tests' own read-only queries on a store (the schema is the same on both): an
/// SQLite or PostgreSQL pool by the URL, opened on first use.
pub struct Sql {
    url: String,
    pool: tokio::sync::OnceCell<QueryPool>,
}

enum QueryPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Sql {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            pool: tokio::sync::OnceCell::new(),
        }
    }

    async fn pool(&self) -> &QueryPool {
        self.pool
            .get_or_init(|| async {
                if self.url.starts_with("sqlite:") {
                    QueryPool::Sqlite(
                        sqlx::sqlite::SqlitePoolOptions::new()
                            .max_connections(1)
                            .connect(&self.url)
                            .await
                            .expect("open the test database"),
                    )
                } else {
                    QueryPool::Postgres(
                        sqlx::postgres::PgPoolOptions::new()
                            .max_connections(1)
                            .connect(&self.url)
                            .await
                            .expect("open the test database"),
                    )
                }
            })
            .await
    }

    /// The first column of every row as text, NULL as "". The column must be text
    /// (cast it otherwise).
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let rows: Vec<Option<String>> = match self.pool().await {
            QueryPool::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            QueryPool::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// One integer: the first column of the first row, e.g. a `COUNT(*)` (BIGINT on
    /// PostgreSQL; INTEGER and SMALLINT columns are read too).
    pub async fn i64(&self, sql: &str) -> i64 {
        match self.pool().await {
            QueryPool::Sqlite(pool) => sqlx::query(sql)
                .fetch_one(pool)
                .await
                .and_then(|row| row.try_get::<i64, _>(0)),
            QueryPool::Postgres(pool) => sqlx::query(sql).fetch_one(pool).await.and_then(|row| {
                row.try_get::<i64, _>(0)
                    .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
                    .or_else(|_| row.try_get::<i16, _>(0).map(i64::from))
            }),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn close(&self) {
        match self.pool.get() {
            Some(QueryPool::Sqlite(p)) => p.close().await,
            Some(QueryPool::Postgres(p)) => p.close().await,
            None => {}
        }
    }
}

pub struct TestApp {
    pub base: String,
    /// Admin key of org [`ORG`].
    pub admin_key: String,
    pub client: reqwest::Client,
    /// The database URL, for CLI commands run against the same store.
    pub database_url: String,
    /// Its store (kept by [`TestApp::restart_with`]; on PostgreSQL dropped with the app).
    db: Option<TestDb>,
    shutdown: CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    sql: Sql,
}

/// An answer: status, headers and the body parsed as JSON (`Value::Null` if not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    /// Asserts the contract's error form: exactly `{message, code}` with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        let obj = self
            .body
            .as_object()
            .unwrap_or_else(|| panic!("error body is not an object: {}", self.text));
        assert_eq!(
            obj.get("code").and_then(Value::as_str),
            Some(code),
            "body: {}",
            self.text
        );
        assert!(
            obj.get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| !m.is_empty()),
            "body: {}",
            self.text
        );
        assert_eq!(obj.len(), 2, "error body has extra fields: {}", self.text);
    }

    /// A header's value, or "".
    #[allow(
        dead_code,
        reason = "used by the PostgreSQL suite only (tests/api/scale.rs)"
    )]
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A server with every default except: private targets allowed, a known admin key.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose configuration `tweak` may change before it starts.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_in(TestDb::new().await, tweak).await
}

/// A server on `db` (kept if it has data).
async fn spawn_in(db: TestDb, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let url = db.url.clone();
    let mut config = ServeConfig::with_database(url.clone());
    config.allow_private_targets = true;
    config.bootstrap_key = Some(ADMIN_KEY.into());
    config.bootstrap_org = ORG.into();
    config.shutdown_grace_secs = 1;
    config.master_key = master_key_for(&url).map(str::to_owned);
    tweak(&mut config);
    let admin_key = config.bootstrap_key.clone().unwrap_or_default();
    let server = Server::bind(config).await.expect("server starts");
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let running = Some(tokio::spawn(server.run(shutdown.clone())));
    TestApp {
        sql: Sql::new(&url),
        base: format!("http://{addr}"),
        admin_key,
        client: reqwest::Client::new(),
        database_url: url,
        db: Some(db),
        shutdown,
        running,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Stops this server gracefully and starts another on the same database.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
        self.sql.close().await;
        let db = self.db.take().expect("a store");
        spawn_in(db, tweak).await
    }

    /// Runs a read-only query on this server's store and returns the first column of
    /// every row as text (see [`Sql::strings`]).
    pub async fn sql_strings(&self, sql: &str) -> Vec<String> {
        self.sql.strings(sql).await
    }

    /// Runs a read-only query on this server's store that answers one integer, e.g. a
    /// `COUNT(*)` (see [`Sql::i64`]).
    pub async fn sql_i64(&self, sql: &str) -> i64 {
        self.sql.i64(sql).await
    }

    /// Sends a request with `key` (if any) as `Authorization: Basic <key>`, and `body`
    /// (if any) as JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            req = req.header("Authorization", format!("Basic {key}"));
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        Self::read(req.send().await.expect("request sent")).await
    }

    pub async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            body,
        }
    }

    /// GET as the admin.
    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, Some(&self.admin_key), None)
            .await
    }

    /// POST JSON as the admin.
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(&self.admin_key), Some(body))
            .await
    }

    /// DELETE as the admin.
    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, Some(&self.admin_key), None)
            .await
    }

    /// Creates a key of `role` in the admin's org through the API and returns it.
    pub async fn create_key(&self, role: &str) -> String {
        let resp = self
            .post("/webhooks/v1/keys", &serde_json::json!({ "role": role }))
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        resp.body["key"].as_str().expect("key in answer").to_owned()
    }

    /// Creates an admin key of another org with the CLI and returns it.
    pub async fn key_for_org(&self, org: &str, role: &str) -> String {
        let out = tokio::process::Command::new(posthorn_bin())
            .args([
                "keys",
                "create",
                "--org",
                org,
                "--role",
                role,
                "--database",
                &self.database_url,
            ])
            .output()
            .await
            .expect("posthorn keys create runs");
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    }
}

/// The `posthorn` binary built for these tests.
pub fn posthorn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_posthorn")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// SIGKILLs a child process of the test if the test process dies first (SIGKILL, abort:
/// no destructor runs, so `kill_on_drop` cannot). A small `sh` in a process group of
/// its own polls both pids; it ends with the child.
pub struct ChildGuard(Option<std::process::Child>);

const CHILD_WATCHDOG: &str = r#"
trap '' INT TERM HUP
while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 0.2; done
kill -0 "$1" 2>/dev/null || kill -KILL "$2" 2>/dev/null
"#;

impl ChildGuard {
    pub fn new(child_pid: Option<u32>) -> Self {
        use std::os::unix::process::CommandExt;
        let Some(child_pid) = child_pid else {
            return Self(None);
        };
        let watchdog = std::process::Command::new("sh")
            .arg("-c")
            .arg(CHILD_WATCHDOG)
            .arg("posthorn-test-child-watchdog")
            .arg(std::process::id().to_string())
            .arg(child_pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start a child watchdog (sh)");
        Self(Some(watchdog))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // The child is being killed (kill_on_drop); its watchdog ends within a poll.
        if let Some(mut watchdog) = self.0.take() {
            std::thread::spawn(move || watchdog.wait());
        }
    }
}

/// The admin key of every [`Node`] (its bootstrap key, in org `o-default`).
pub const NODE_KEY: &str = "node-admin-key-0123456789";

/// A real `posthorn serve` process: private targets allowed, no rate limit, admin key
/// [`NODE_KEY`], logs (warn) in a file; killed when dropped.
pub struct Node {
    pub child: tokio::process::Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub client: reqwest::Client,
    logs: TempDir,
    _guard: ChildGuard,
}

impl Node {
    /// A node on `database_url` (with [`MASTER_KEY`] on PostgreSQL) on a free port;
    /// `env` is applied last.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Node {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(database_url, free_port(), env).await {
                Ok(node) => return node,
                // Most likely the port was taken meanwhile.
                Err(log) => last = log,
            }
        }
        panic!("posthorn serve did not come up:\n{last}");
    }

    /// A node on this port (e.g. the port of a node that was killed).
    pub async fn start_on(database_url: &str, port: u16, env: &[(&str, &str)]) -> Node {
        Self::try_start(database_url, port, env)
            .await
            .unwrap_or_else(|log| panic!("posthorn serve did not come up:\n{log}"))
    }

    async fn try_start(
        database_url: &str,
        port: u16,
        env: &[(&str, &str)],
    ) -> Result<Node, String> {
        let logs = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(logs.path().join("serve.log")).expect("log file");
        let mut cmd = tokio::process::Command::new(posthorn_bin());
        cmd.arg("serve")
            .env_clear()
            .env("POSTHORN_DATABASE_URL", database_url)
            .env("POSTHORN_LISTEN", format!("127.0.0.1:{port}"))
            .env("POSTHORN_BOOTSTRAP_KEY", NODE_KEY)
            .env("POSTHORN_ALLOW_PRIVATE_TARGETS", "true")
            .env("POSTHORN_RATE_LIMIT", "0")
            .env("POSTHORN_LOG", "warn")
            .env("POSTHORN_SHUTDOWN_GRACE_SECS", "1");
        if let Some(key) = master_key_for(database_url) {
            cmd.env("POSTHORN_MASTER_KEY", key);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.current_dir(logs.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("posthorn serve starts");
        let mut node = Node {
            _guard: ChildGuard::new(child.id()),
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            logs,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = node
                .client
                .get(format!("{}/healthz", node.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if resp.status() == 200 {
                    return Ok(node);
                }
            }
            if let Some(status) = node.child.try_wait().expect("try_wait") {
                return Err(format!("exited ({status}):\n{}", node.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("no /healthz within 30 s:\n{}", node.log()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the node logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("serve.log")).unwrap_or_default()
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }

    /// SIGTERM, and waits (≤ 10 s) for the exit.
    #[allow(
        dead_code,
        reason = "used by the PostgreSQL suite only (tests/api/scale.rs)"
    )]
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let kill = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(kill.success());
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("serve exits within 10 s of SIGTERM")
            .expect("wait")
    }

    /// Panics (with its log) if the process has exited.
    #[allow(
        dead_code,
        reason = "used by the PostgreSQL suite only (tests/api/scale.rs)"
    )]
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("posthorn serve exited ({status}):\n{}", self.log());
        }
    }

    /// A request as [`NODE_KEY`] unless another key is given.
    #[allow(
        dead_code,
        reason = "used by the PostgreSQL suite only (tests/api/scale.rs)"
    )]
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .header(
                "Authorization",
                format!("Basic {}", key.unwrap_or(NODE_KEY)),
            );
        if let Some(body) = body {
            req = req.json(body);
        }
        TestApp::read(req.send().await.expect("request sent")).await
    }

    /// POST JSON as [`NODE_KEY`].
    #[allow(
        dead_code,
        reason = "used by the PostgreSQL suite only (tests/api/scale.rs)"
    )]
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, None, Some(body)).await
    }
}
