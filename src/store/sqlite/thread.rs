//! The threads that own the SQLite connections: one writer, which runs every write as
//! one message (a whole publish group, claim or outcome batch: one hand-off per
//! operation, not per statement), and a few readers for everything else.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, Notify};

use super::sql::map_err;
use crate::domain::EndpointUid;
use crate::store::{StoreError, StoreResult, Target};

/// How long a connection waits for another process's lock (the `keys create` CLI).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoints a route (org, event name, subcategory) fans out to.
pub(super) type RouteKey = (String, String, String);

/// What the writer thread owns besides its connection: caches of what only writes
/// change, so they are exact. Every write to an endpoint or a subscription clears them.
#[derive(Default)]
pub(super) struct Caches {
    pub routes: HashMap<RouteKey, Arc<[Arc<Target>]>>,
    /// Endpoints by uid, for claims (also disabled and deleted ones).
    pub targets: HashMap<EndpointUid, Arc<Target>>,
}

impl Caches {
    pub fn endpoints_changed(&mut self) {
        self.routes.clear();
        self.targets.clear();
    }
}

pub(super) struct WriterState {
    pub conn: Connection,
    pub caches: Caches,
    /// The dispatcher's wake-up: notified when a write made work due.
    pub wake: Arc<Notify>,
    /// Whether commits currently wait for fsync.
    durable: bool,
}

impl WriterState {
    /// Sets whether commits wait for fsync: yes for anything acknowledged to a client
    /// (publishes, API writes); no for the queue's own bookkeeping (claims, outcomes,
    /// releases, parking), where losing a commit to a power cut makes a delivery happen
    /// again but never loses one (the next durable commit syncs the WAL they are in).
    pub fn durable(&mut self, durable: bool) -> StoreResult<()> {
        if self.durable != durable {
            let level = if durable { "FULL" } else { "NORMAL" };
            self.conn
                .pragma_update(None, "synchronous", level)
                .map_err(map_err)?;
            self.durable = durable;
        }
        Ok(())
    }
}

type Job = Box<dyn FnOnce(&mut WriterState) + Send>;

pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable(anyhow::anyhow!("the SQLite writer thread has stopped"))
}

impl Writer {
    /// Starts the writer thread on `conn`; it ends when the `Writer` is dropped.
    pub fn start(conn: Connection, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let mut state = WriterState {
            conn,
            caches: Caches::default(),
            wake,
            durable: true,
        };
        state.conn.pragma_update(None, "synchronous", "FULL")?;
        state.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut state);
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `op` on the writer thread and returns its result.
    pub async fn run<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriterState) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |state| {
            // A panic must not take the thread (and every later write) with it; an open
            // transaction is rolled back when it is dropped during the unwind.
            let result =
                std::panic::catch_unwind(AssertUnwindSafe(|| op(state))).unwrap_or_else(|_| {
                    Err(StoreError::Other(anyhow::anyhow!("a store write panicked")))
                });
            let _ = reply.send(result);
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Copies the WAL back into the database on a thread of its own, so that the writer
/// never does it inside a commit (the writer's automatic checkpoints are off). Passive:
/// it never blocks the writer or the readers. Stops when dropped.
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

impl Checkpointer {
    pub fn start(path: PathBuf) -> anyhow::Result<Self> {
        let conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed; trying again");
                    }
                }
            })?;
        Ok(Self { _stop: stop })
    }
}

/// Read-only connections, used on the blocking pool.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Connections kept open for reading; more are opened for bursts and closed after.
const IDLE_READERS: usize = 4;

impl Readers {
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            path,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn open(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `op` on a read connection, off the async threads.
    pub async fn run<T, F>(self: &Arc<Self>, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken = this
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let conn = match taken {
                Some(conn) => conn,
                None => this.open()?,
            };
            let result = op(&conn);
            let mut idle = this.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("a store read failed: {e}")))?
    }
}
