//! The real `posthorn` binary as a user runs it:
//! `serve` in child processes on free ports, `keys create` beside a running server.

use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::helpers::{free_port, posthorn_bin, ChildGuard, TestDb};

mod backup;
mod browser;
mod client;
mod forward;
mod keys;
mod logs;
mod serve;
mod tools;

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
