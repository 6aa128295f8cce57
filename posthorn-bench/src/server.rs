//! The posthorn process under test (and, for `--store postgres`, its throwaway
//! PostgreSQL).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::Store;

pub const ADMIN_KEY: &str = "bench-admin-key-0123456789";
const MASTER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The `posthorn` binary: `--bin`, or built now with cargo (release) when run by cargo.
pub fn binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let sibling = std::env::current_exe()?.with_file_name("posthorn");
    if let Ok(cargo) = std::env::var("CARGO") {
        eprintln!("building posthorn (release) ...");
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "posthorn",
                "--bin",
                "posthorn",
            ])
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of posthorn failed");
        }
    }
    if !sibling.exists() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --bin",
            sibling.display()
        );
    }
    Ok(sibling)
}

/// The store of a run, kept until the end of it: the SQLite file's directory, or the
/// throwaway cluster.
pub enum Database {
    Sqlite(tempfile::TempDir),
    Postgres(
        #[expect(dead_code, reason = "held for its Drop, which stops the cluster")]
        throwaway_pg::PgCluster,
    ),
}

impl Database {
    /// A fresh store of the kind `store` names, and its URL.
    pub async fn fresh(store: Store) -> anyhow::Result<(Self, String)> {
        Ok(match store {
            Store::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                (Self::Sqlite(dir), url)
            }
            Store::Postgres => {
                crate::phases::progress("starting a throwaway PostgreSQL (fsync on)");
                let cluster = tokio::task::spawn_blocking(throwaway_pg::PgCluster::durable).await?;
                let url = cluster.create_database().await;
                (Self::Postgres(cluster), url)
            }
        })
    }

    /// The SQLite database file, for the SQLite store.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        match self {
            Self::Sqlite(dir) => Some(dir.path().join("bench.db")),
            Self::Postgres(_) => None,
        }
    }
}

pub struct Posthorn {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Posthorn {
    pub async fn start(
        bin: &Path,
        database_url: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("POSTHORN_LISTEN", addr.to_string())
            .env("POSTHORN_DATABASE_URL", database_url)
            .env("POSTHORN_MASTER_KEY", MASTER_KEY)
            .env("POSTHORN_BOOTSTRAP_KEY", ADMIN_KEY)
            .env("POSTHORN_ALLOW_PRIVATE_TARGETS", "true")
            .env("POSTHORN_RATE_LIMIT", "0")
            .env(
                "POSTHORN_LOG",
                std::env::var("BENCH_POSTHORN_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!("posthorn did not start listening on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child, addr })
    }

    /// Peak resident set size so far, in MiB (VmHWM).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.status_kib("VmHWM:").map(|kb| kb / 1024.0)
    }

    /// Resident set size now, in MiB (VmRSS).
    pub fn rss_mib(&self) -> Option<f64> {
        self.status_kib("VmRSS:").map(|kb| kb / 1024.0)
    }

    /// One `kB` field of `/proc/<pid>/status`.
    fn status_kib(&self, field: &str) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// CPU time the process has used so far (user + system), in seconds.
    pub fn cpu_secs(&self) -> f64 {
        self.child
            .id()
            .map_or(0.0, |pid| cpu_secs_of(&format!("/proc/{pid}/stat")))
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// User + system CPU seconds from a `/proc/<pid>/stat` file (fields 14 and 15, in
/// clock ticks of 1/100 s on Linux).
pub fn cpu_secs_of(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after it are plain.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
