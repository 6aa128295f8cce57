//! Real `posthorn` processes: the binary, a free port, a watchdog that kills a child if
//! the test process dies first ([`ChildGuard`]), and a `posthorn serve` node ([`Node`]).
//! Re-exported by `helpers`, so tests name them `crate::helpers::X`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;

use super::{master_key_for, Resp, TestApp};

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
        reason = "used by the PostgreSQL suite only (tests/api/scale/)"
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
        reason = "used by the PostgreSQL suite only (tests/api/scale/)"
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
        reason = "used by the PostgreSQL suite only (tests/api/scale/)"
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
        reason = "used by the PostgreSQL suite only (tests/api/scale/)"
    )]
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, None, Some(body)).await
    }
}
