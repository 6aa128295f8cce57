//! Test harness: a real posthorn server on port 0 with a fresh SQLite store per test,
//! driven over real HTTP.

use posthorn::app::Server;
use posthorn::config::ServeConfig;
use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// The store a test binary runs its suite on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const ORG: &str = "o-test";

pub struct TestApp {
    pub base: String,
    /// Admin key of org [`ORG`].
    pub admin_key: String,
    pub client: reqwest::Client,
    /// The database URL, for CLI commands run against the same store.
    pub database_url: String,
    pub dir: TempDir,
    shutdown: CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
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
}

/// A server with every default except: private targets allowed, a known admin key.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose configuration `tweak` may change before it starts.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_in(tempfile::tempdir().expect("tempdir"), tweak).await
}

/// A server on the database in `dir` (kept if it exists).
async fn spawn_in(dir: TempDir, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let database_url = format!("sqlite://{}", dir.path().join("posthorn.db").display());
    let mut config = ServeConfig::with_database(database_url.clone());
    config.allow_private_targets = true;
    config.bootstrap_key = Some(ADMIN_KEY.into());
    config.bootstrap_org = ORG.into();
    config.shutdown_grace_secs = 1;
    tweak(&mut config);
    let admin_key = config.bootstrap_key.clone().unwrap_or_default();
    let server = Server::bind(config).await.expect("server starts");
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let running = Some(tokio::spawn(server.run(shutdown.clone())));
    TestApp {
        base: format!("http://{addr}"),
        admin_key,
        client: reqwest::Client::new(),
        database_url,
        dir,
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
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = std::mem::replace(&mut self.dir, dir);
        spawn_in(dir, tweak).await
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
