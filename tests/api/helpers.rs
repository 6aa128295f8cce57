//! Test harness: a real posthorn server on port 0 with a fresh store per test (an SQLite
//! file, or a database of its own in the shared PostgreSQL cluster: the store the suite
//! runs on, [`Backend::of_suite`]), driven over real HTTP. Real `posthorn serve`
//! processes are in [`node`], re-exported here.

use std::path::PathBuf;
use std::time::Duration;

use posthorn::config::ServeConfig;
use posthorn::server::Server;
use reqwest::Method;
use serde_json::Value;
use sqlx::Row;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub use throwaway_pg::PgCluster;

mod node;

pub use node::{free_port, posthorn_bin, ChildGuard, Node, NODE_KEY};

/// A kind of store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The store the suite runs on: `POSTHORN_TEST_STORE` (`sqlite`, the default, or
    /// `postgres`). Tests under `on_sqlite` and `on_postgres` use their own store
    /// whatever it says.
    pub fn of_suite() -> Self {
        match std::env::var("POSTHORN_TEST_STORE").as_deref() {
            Ok("postgres") => Self::Postgres,
            Ok("sqlite") | Err(_) => Self::Sqlite,
            Ok(other) => panic!("POSTHORN_TEST_STORE={other:?}: expected sqlite or postgres"),
        }
    }
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
    /// A store of the suite's kind.
    pub async fn new() -> Self {
        Self::of(Backend::of_suite()).await
    }

    pub async fn of(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("test.db").display()),
            Backend::Postgres => PgCluster::shared().create_database().await,
        };
        Self { url, dir }
    }

    pub fn backend(&self) -> Backend {
        if self.url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
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
        if self.backend() == Backend::Postgres {
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
/// SQLite connection or a PostgreSQL pool by the URL, opened on first use.
pub struct Sql {
    url: String,
    pool: tokio::sync::OnceCell<sqlx::PgPool>,
}

impl Sql {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            pool: tokio::sync::OnceCell::new(),
        }
    }

    async fn pg(&self) -> &sqlx::PgPool {
        self.pool
            .get_or_init(|| async {
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&self.url)
                    .await
                    .expect("open the test database")
            })
            .await
    }

    /// Runs `query` on a read-only connection to the SQLite file.
    async fn sqlite<T: Send + 'static>(
        &self,
        query: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let path = self.url.trim_start_matches("sqlite://").to_owned();
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            conn.busy_timeout(Duration::from_secs(10))?;
            query(&conn)
        })
        .await
        .expect("query task")
    }

    /// The first column of every row as text, NULL as "". The column must be text
    /// (cast it otherwise).
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let rows: Vec<Option<String>> = if self.url.starts_with("sqlite:") {
            let owned = sql.to_owned();
            self.sqlite(move |c| {
                let mut stmt = c.prepare(&owned)?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect()
            })
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
        } else {
            sqlx::query_scalar(sql)
                .fetch_all(self.pg().await)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        rows.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// One integer: the first column of the first row, e.g. a `COUNT(*)` (BIGINT on
    /// PostgreSQL; INTEGER and SMALLINT columns are read too).
    pub async fn i64(&self, sql: &str) -> i64 {
        if self.url.starts_with("sqlite:") {
            let owned = sql.to_owned();
            return self
                .sqlite(move |c| c.query_row(&owned, [], |r| r.get(0)))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        sqlx::query(sql)
            .fetch_one(self.pg().await)
            .await
            .and_then(|row| {
                row.try_get::<i64, _>(0)
                    .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
                    .or_else(|_| row.try_get::<i16, _>(0).map(i64::from))
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn close(&self) {
        if let Some(p) = self.pool.get() {
            p.close().await;
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
        reason = "used by the PostgreSQL suite only (tests/api/scale/)"
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

/// A server on a store of the given kind, whatever the suite runs on.
pub async fn spawn_app_on(backend: Backend, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_in(TestDb::of(backend).await, tweak).await
}

/// A server on `db` (kept if it has data).
pub async fn spawn_in(db: TestDb, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
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
