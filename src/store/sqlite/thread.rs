//! The threads that own the SQLite connections: one writer, and a few readers.
//!
//! The writer runs every write as one message (a whole publish group, claim or outcome
//! batch: one hand-off per operation, not per statement) and commits in groups: it
//! takes every message waiting, runs each inside a savepoint of one transaction (an
//! operation that fails rolls back alone), commits once, and only then answers them.
//! So a publish, the claims and the outcomes waiting beside it share one commit, one
//! fsync and the pages they touch. A group waits for fsync if any of its operations
//! must be durable (anything acknowledged to a client); the queue's own bookkeeping
//! alone does not (losing it to a power cut repeats a delivery, never loses one).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{oneshot, Notify};

use super::sql::map_err;
use crate::domain::EndpointUid;
use crate::store::{StoreError, StoreResult, Target};

/// How long a connection waits for another process's lock (the `keys create` CLI).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most operations committed together.
const MAX_GROUP: usize = 256;

/// The endpoints a route (org, event name, subcategory) fans out to.
pub(super) type RouteKey = (String, String, String);

/// What the writer thread keeps besides its connection: caches of what only its writes
/// change, so they are exact. Every write to an endpoint or a subscription clears them.
#[derive(Default)]
pub(super) struct Caches {
    pub routes: HashMap<RouteKey, Arc<[Arc<Target>]>>,
    /// Endpoints by uid, for claims (also disabled and deleted ones).
    pub targets: HashMap<EndpointUid, Arc<Target>>,
    /// When each endpoint's last success was written, while it is healthy: a healthy
    /// endpoint's `last_success_ms` is written at most once a second.
    pub healthy_since: HashMap<EndpointUid, i64>,
}

impl Caches {
    pub fn endpoints_changed(&mut self) {
        self.routes.clear();
        self.targets.clear();
        self.healthy_since.clear();
    }
}

/// What an operation gets: the connection, inside the group's transaction.
pub(super) struct Write<'a> {
    pub conn: &'a Connection,
    pub caches: &'a mut Caches,
    /// Set when the operation made work due: the dispatcher is woken after the commit.
    pub wake: bool,
}

/// Answers an operation once its group's commit is known.
type Finish = Box<dyn FnOnce(Result<(), &rusqlite::Error>) + Send>;
/// Runs an operation (`None`: the transaction could not begin); says whether it
/// succeeded, and how to answer.
type Run = Box<dyn FnOnce(Option<&mut Write<'_>>) -> (bool, Finish) + Send>;

struct Job {
    durable: bool,
    run: Run,
}

pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable(anyhow::anyhow!("the SQLite writer thread has stopped"))
}

/// The store's error for a commit that failed, for every operation of the group.
fn commit_failed(err: &rusqlite::Error) -> StoreError {
    let cause = anyhow::anyhow!("commit failed: {err}");
    match err {
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(
                e.code,
                ErrorCode::DiskFull
                    | ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::CannotOpen
                    | ErrorCode::OutOfMemory
            ) =>
        {
            StoreError::Unavailable(cause)
        }
        _ => StoreError::Other(cause),
    }
}

struct Thread {
    conn: Connection,
    caches: Caches,
    wake: Arc<Notify>,
    /// Whether commits currently wait for fsync.
    durable: bool,
}

impl Thread {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn sync(&mut self, durable: bool) -> rusqlite::Result<()> {
        if self.durable != durable {
            let level = if durable { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", level)?;
            self.durable = durable;
        }
        Ok(())
    }

    fn commit_group(&mut self, group: Vec<Job>) {
        let durable = group.iter().any(|j| j.durable);
        if let Err(e) = self
            .sync(durable)
            .and_then(|()| self.conn.execute_batch("BEGIN IMMEDIATE"))
        {
            for job in group {
                let (_, finish) = (job.run)(None);
                finish(Err(&e));
            }
            return;
        }
        let mut write = Write {
            conn: &self.conn,
            caches: &mut self.caches,
            wake: false,
        };
        let mut finishes = Vec::with_capacity(group.len());
        let mut broken = None;
        for job in group {
            if let Err(e) = write.conn.execute_batch("SAVEPOINT op") {
                broken = Some(e);
            }
            let (ok, finish) = (job.run)(Some(&mut write));
            let end = if ok {
                "RELEASE op"
            } else {
                "ROLLBACK TO op; RELEASE op"
            };
            if let Err(e) = write.conn.execute_batch(end) {
                broken = Some(e);
            }
            finishes.push(finish);
        }
        let wake = write.wake;
        let committed = match broken {
            Some(e) => Err(e),
            None => self.conn.execute_batch("COMMIT"),
        };
        if committed.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
            // What was read or changed inside the lost transaction is not known to be.
            self.caches = Caches::default();
        }
        for finish in finishes {
            finish(committed.as_ref().map(|_| ()));
        }
        if committed.is_ok() && wake {
            self.wake.notify_one();
        }
    }
}

impl Writer {
    /// Starts the writer thread on `conn`; it ends when the `Writer` is dropped.
    pub fn start(conn: Connection, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        conn.pragma_update(None, "synchronous", "FULL")?;
        let thread = Thread {
            conn,
            caches: Caches::default(),
            wake,
            durable: true,
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || thread.run(rx))?;
        Ok(Self { jobs })
    }

    /// Runs `op` on the writer thread and returns its result once committed; if the
    /// commit fails, `undo` gets what the operation returned (to give back what it
    /// took) and the caller the error. `durable`: the commit waits for fsync.
    pub async fn run_undoable<T, F, U>(&self, durable: bool, op: F, undo: U) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Write<'_>) -> StoreResult<T> + Send + 'static,
        U: FnOnce(T) + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let run: Run = Box::new(move |write: Option<&mut Write<'_>>| {
            // A panic must not take the thread (and every later write) with it; the
            // operation's savepoint is rolled back.
            let result = write.map(|write| {
                std::panic::catch_unwind(AssertUnwindSafe(|| op(write))).unwrap_or_else(|_| {
                    Err(StoreError::Other(anyhow::anyhow!("a store write panicked")))
                })
            });
            let ok = matches!(result, Some(Ok(_)));
            let finish: Finish = Box::new(move |committed| {
                let answer = match (result, committed) {
                    (Some(Ok(value)), Ok(())) => Ok(value),
                    (Some(Ok(value)), Err(e)) => {
                        undo(value);
                        Err(commit_failed(e))
                    }
                    (Some(Err(e)), _) => Err(e),
                    (None, Err(e)) => Err(commit_failed(e)),
                    (None, Ok(())) => Err(stopped()),
                };
                let _ = reply.send(answer);
            });
            (ok, finish)
        });
        self.jobs
            .send(Job { durable, run })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// [`Writer::run_undoable`] for operations that take nothing to give back.
    pub async fn run<T, F>(&self, durable: bool, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Write<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.run_undoable(durable, op, |_| {}).await
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
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(map_err)?;
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
