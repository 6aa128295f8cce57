//! Throwaway PostgreSQL clusters for posthorn's tests and benchmark.
//!
//! One cluster is shared by every test of a test process ([`PgCluster::shared`]): it is
//! started on first use, and each test gets a database of its own in it
//! ([`PgCluster::create_database`]). A test that must stop and start PostgreSQL gets a
//! cluster of its own ([`PgCluster::dedicated`]).
//!
//! Lifecycle: `initdb` into a fresh directory under the system temp dir, then
//! `pg_ctl start` on a free loopback port (its unix socket is in that directory too).
//! Before PostgreSQL starts, a small `sh` watchdog is started in a process group of its
//! own (so that a Ctrl-C to the test's group does not kill it first): it polls the test
//! process with `kill -0`, and once that is gone (normal exit, panic, abort, SIGKILL) it
//! stops PostgreSQL (SIGQUIT, then SIGKILL) and removes the directory. Statics are never
//! dropped, so the watchdog is what cleans up the shared cluster; a dedicated cluster is
//! also stopped and removed when it is dropped. Test databases (`t<n>_<test name>`) are
//! dropped in the background when their test ends ([`PgCluster::drop_database_later`]),
//! so the cluster stays small and removing it is quick.
//!
//! Binaries: `POSTHORN_PG_BIN`, else `pg_config --bindir`, else the highest
//! `/usr/lib/postgresql/*/bin`, else `initdb` on `PATH`. Running as root (CI), `initdb`
//! and `postgres` refuse to run, so they run as the `postgres` user through `runuser`.
//!
//! Blocking on purpose (std::process): every `#[tokio::test]` has its own runtime, and
//! the shared cluster outlives all of them. From async code, call [`PgCluster::stop`]
//! and [`PgCluster::start`] inside `spawn_blocking` if the test's runtime must keep
//! serving meanwhile.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use sqlx::Connection;

/// The database superuser of every test cluster (trust authentication, no password).
pub const SUPERUSER: &str = "postgres";

/// Numbers databases and cluster directories, unique within the test process.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) are needed \
     for the PostgreSQL test suite (tests/postgres.rs). Install them (Debian/Ubuntu: \
     `apt-get install postgresql`; macOS: `brew install postgresql`) or point \
     POSTHORN_PG_BIN at the directory holding them.";

/// Watches the test process; when it is gone, stops PostgreSQL and removes the cluster.
/// `$1` test pid, `$2` cluster directory, `$3` data directory. Also ends when the
/// directory disappears (a dedicated cluster dropped normally).
const WATCHDOG: &str = r#"
trap '' INT TERM HUP
while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 0.2; done
if [ -f "$3/postmaster.pid" ]; then
  pm=$(head -n 1 "$3/postmaster.pid")
  if [ -n "$pm" ] && kill -QUIT "$pm" 2>/dev/null; then
    i=0
    while kill -0 "$pm" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL "$pm" 2>/dev/null
  fi
fi
rm -rf "$2"
"#;

/// A PostgreSQL cluster of this test process.
pub struct PgCluster {
    bin: PathBuf,
    /// Holds `data/`, the unix socket, the server log and the watchdog's target.
    root: PathBuf,
    data: PathBuf,
    port: u16,
    /// Run the server binaries as the `postgres` user (we are root).
    as_postgres: bool,
    /// Outlives this process if it must (the shared cluster's is never waited for:
    /// statics are not dropped, and init reaps it).
    watchdog: Child,
    /// fsync and full-page writes on.
    durable: bool,
}

impl PgCluster {
    /// The cluster shared by every test of this process, started on first use.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(PgCluster::dedicated)
    }

    /// A new cluster of its own, started; stopped and removed on drop (or, whatever
    /// happens, when the test process ends). Fast and disposable: fsync is off.
    pub fn dedicated() -> PgCluster {
        Self::start_new(false)
    }

    /// Like [`PgCluster::dedicated`], but with fsync and full-page writes on, as a
    /// production server has them (for benchmarks).
    pub fn durable() -> PgCluster {
        Self::start_new(true)
    }

    fn start_new(durable: bool) -> PgCluster {
        let bin = find_bin_dir();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("posthorn-pg-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        // The watchdog first: from here on, nothing outlives the test process.
        let watchdog = start_watchdog(&root);
        let as_postgres = fs::metadata(&root).expect("stat cluster dir").uid() == 0;
        if as_postgres {
            let status = Command::new("chown")
                .arg(format!("{SUPERUSER}:"))
                .arg(&root)
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "running as root, the cluster must belong to a `{SUPERUSER}` user \
                 (initdb refuses root), but `chown {SUPERUSER}: {}` failed. {INSTALL_HINT}",
                root.display()
            );
        }
        let data = root.join("data");
        let mut cluster = PgCluster {
            bin,
            root,
            data,
            port: 0,
            as_postgres,
            watchdog,
            durable,
        };
        cluster.initdb();
        // A free port may be taken before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            cluster.configure();
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(log) => last = log,
            }
        }
        panic!(
            "PostgreSQL did not start in {}:\n{last}",
            cluster.root.display()
        );
    }

    /// The directory that holds the cluster (gone once it is dropped).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` in this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database with a unique name and returns its URL.
    pub async fn create_database(&self) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // The test's name (libtest names its threads after tests), for whoever looks.
        let test: String = std::thread::current()
            .name()
            .unwrap_or("")
            .rsplit("::")
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!("t{n}_{test}");
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {e}"));
        // FILE_COPY: no WAL for the copy (WAL_LOG would write the whole template to WAL).
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\" STRATEGY = FILE_COPY"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        self.url(&name)
    }

    /// Drops database `name` soon, in the background (`WITH (FORCE)`: sessions still on
    /// it are ended). Keeps the shared cluster small while the suite runs; whatever is
    /// left goes with the cluster.
    pub fn drop_database_later(&self, name: &str) {
        static DROPPER: OnceLock<mpsc::Sender<String>> = OnceLock::new();
        let admin = self.url("postgres");
        let sender = DROPPER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<String>();
            std::thread::Builder::new()
                .name("pg-dropper".into())
                .spawn(move || drop_databases(&admin, rx))
                .expect("spawn the database dropper");
            tx
        });
        let _ = sender.send(name.to_owned());
    }

    /// Stops PostgreSQL (fast shutdown: sessions are ended, nothing committed is lost).
    /// Blocks until it is down.
    pub fn stop(&self) {
        let out = self
            .command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(&self.data)
            .output()
            .expect("pg_ctl stop runs");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts PostgreSQL again on the same port and data. Blocks until it accepts
    /// connections.
    pub fn start(&self) {
        if let Err(log) = self.try_start() {
            panic!("PostgreSQL did not start again:\n{log}");
        }
    }

    /// A server binary, as the right user, run in the cluster directory.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", SUPERUSER, "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        cmd.current_dir(&self.root).stdin(Stdio::null());
        cmd
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .args([
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
                "-U",
                SUPERUSER,
                "-D",
            ])
            .arg(&self.data)
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb ({e}). {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Settings for a disposable, fast server on `self.port` (appended: the last
    /// setting of a name wins, so a retry on another port just appends again).
    fn configure(&self) {
        let conf = format!(
            "\n# posthorn tests\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{root}'\n\
             max_connections = 300\n\
             shared_buffers = 64MB\n\
             fsync = {fsync}\n\
             full_page_writes = {fsync}\n\
             wal_level = minimal\n\
             max_wal_senders = 0\n\
             max_wal_size = 2GB\n\
             log_min_messages = warning\n\
             log_min_error_statement = panic\n\
             log_connections = off\n",
            port = self.port,
            root = self.root.display(),
            fsync = if self.durable { "on" } else { "off" },
        );
        let path = self.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&path).expect("read postgresql.conf");
        text.push_str(&conf);
        fs::write(&path, text).expect("write postgresql.conf");
    }

    /// `pg_ctl start -w`; the server log on failure.
    fn try_start(&self) -> Result<(), String> {
        let log = self.root.join("server.log");
        let out = self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-s", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("pg_ctl start runs");
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "pg_ctl: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&log).unwrap_or_default()
        ))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.root);
        // It sees the directory gone and ends within a poll.
        let _ = self.watchdog.wait();
    }
}

/// The dropper thread: one connection, one `DROP DATABASE` at a time.
fn drop_databases(admin_url: &str, names: mpsc::Receiver<String>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let mut conn: Option<sqlx::PgConnection> = None;
        while let Ok(name) = names.recv() {
            if conn.is_none() {
                conn = sqlx::PgConnection::connect(admin_url).await.ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if sqlx::raw_sql(&sql).execute(&mut *c).await.is_err() {
                conn = None;
            }
        }
    });
}

fn start_watchdog(root: &Path) -> Child {
    let data = root.join("data");
    Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("posthorn-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(root)
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the cluster watchdog (sh): {e}"))
}

/// The directory with `initdb`, `pg_ctl` and `postgres`.
fn find_bin_dir() -> PathBuf {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("POSTHORN_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            complete(&dir),
            "POSTHORN_PG_BIN={} has no initdb, pg_ctl and postgres. {INSTALL_HINT}",
            dir.display()
        );
        return dir;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && complete(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return dir;
    }
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| complete(d))
    {
        return dir;
    }
    panic!("no PostgreSQL server binaries found. {INSTALL_HINT}");
}

/// Waits until nothing answers on `port` any more (a stopped cluster).
pub fn wait_closed(port: u16, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "port {port} still answers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local addr")
        .port()
}
