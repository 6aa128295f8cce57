//! Where schema checks run: off the async workers, each within a time budget.
//!
//! Policy: a check of `data` (or of an example) against an event type's schema is CPU
//! work of up to seconds, so it never runs on an async worker (that would stall every
//! org's requests, `/healthz` included). A request's checks run as one job on tokio's
//! blocking pool, holding one of [`SchemaChecks`]' permits (as many as the machine
//! has cores, `POSTHORN_VALIDATION_THREADS`) and one of its org's share (half of them,
//! at least one), so one org cannot hold every permit. The job has a deadline, the
//! request's budget (`POSTHORN_VALIDATION_BUDGET`) from the moment it asks for
//! room: waiting for a permit counts. A request that gets no permit within it is
//! [`Stopped::OrgBusy`] (its org's share was held) or [`Stopped::Busy`] (every permit
//! was); one whose job has not ended by then is [`Stopped::OutOfTime`],
//! and its job stops soon after by itself (each check looks at the clock, see
//! `EventSchema::check_within`; a job of several checks looks at it between them),
//! so its permits come back. A type with no schema never gets here: its publishes
//! pay for no thread hop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::domain::OrgId;

/// Why a job did not give its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// No room in its org's share within its budget: the org's other checks held it.
    OrgBusy,
    /// No room for it within its budget: the checks of other orgs held it.
    Busy,
    /// It did not end within its budget.
    OutOfTime,
    /// It panicked.
    Panicked,
}

/// The permits of schema checks: all of them, and each org's share.
#[derive(Clone)]
pub struct SchemaChecks {
    all: Arc<Semaphore>,
    per_org: usize,
    orgs: Arc<Mutex<HashMap<OrgId, Arc<Semaphore>>>>,
    budget: Duration,
}

impl SchemaChecks {
    /// `threads` checks at once (at least 1), half of them (at least 1) for one org;
    /// each request's checks within `budget`.
    pub fn new(threads: usize, budget: Duration) -> Self {
        let threads = threads.max(1);
        Self {
            all: Arc::new(Semaphore::new(threads)),
            per_org: (threads / 2).max(1),
            orgs: Arc::default(),
            budget,
        }
    }

    /// The default number of checks at once: twice the machine's cores, so that one
    /// org's share (half) can keep every core busy while another org still finds
    /// room; the checks run on threads of their own, never on the async workers.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(4, |n| 2 * n.get())
    }

    /// A request's budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Runs `job` for `org` on the blocking pool; `job` gets the deadline (the budget
    /// from now) and should stop soon after it.
    pub async fn run<T: Send + 'static>(
        &self,
        org: &OrgId,
        job: impl FnOnce(std::time::Instant) -> T + Send + 'static,
    ) -> Result<T, Stopped> {
        let deadline = Instant::now() + self.budget;
        let mut share = self.share(org);
        let own = tokio::time::timeout_at(deadline, share.sem.clone().acquire_owned())
            .await
            .map_err(|_| Stopped::OrgBusy)?
            .map_err(|_| Stopped::OrgBusy)?;
        share.permit = Some(own);
        let global = tokio::time::timeout_at(deadline, self.all.clone().acquire_owned())
            .await
            .map_err(|_| Stopped::Busy)?
            .map_err(|_| Stopped::Busy)?;
        let until = deadline.into_std();
        let handle = tokio::task::spawn_blocking(move || {
            // Held until the job ends, whether or not anyone still waits for it.
            let _held = (share, global);
            job(until)
        });
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Stopped::Panicked),
            Err(_) => Err(Stopped::OutOfTime),
        }
    }

    /// `org`'s share, made when it has none.
    fn share(&self, org: &OrgId) -> OrgShare {
        let mut orgs = self.orgs.lock().unwrap_or_else(PoisonError::into_inner);
        let sem = orgs
            .entry(org.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_org)))
            .clone();
        OrgShare {
            orgs: self.orgs.clone(),
            org: org.clone(),
            sem,
            permit: None,
        }
    }
}

/// A request's hold on its org's share; the last one out removes the org's entry, so
/// the map holds only orgs with checks running or waiting.
struct OrgShare {
    orgs: Arc<Mutex<HashMap<OrgId, Arc<Semaphore>>>>,
    org: OrgId,
    sem: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for OrgShare {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut orgs = self.orgs.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's and this one: no one else holds or waits for the share.
        if Arc::strong_count(&self.sem) == 2
            && orgs
                .get(&self.org)
                .is_some_and(|s| Arc::ptr_eq(s, &self.sem))
        {
            orgs.remove(&self.org);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{SchemaChecks, Stopped};
    use crate::domain::OrgId;

    fn org(id: &str) -> OrgId {
        OrgId::parse(id).expect("org id")
    }

    #[tokio::test]
    async fn one_org_cannot_take_every_permit() {
        let checks = SchemaChecks::new(2, Duration::from_millis(300));
        let (a, b) = (org("a"), org("b"));
        // Org a's one permit is held by a job that ignores its deadline for a while.
        let busy = {
            let checks = checks.clone();
            let a = a.clone();
            tokio::spawn(async move {
                checks
                    .run(&a, |_| std::thread::sleep(Duration::from_millis(600)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(checks.run(&a, |_| 1).await, Err(Stopped::OrgBusy));
        assert_eq!(checks.run(&b, |_| 2).await, Ok(2));
        assert_eq!(busy.await.expect("join"), Err(Stopped::OutOfTime));
        // Once the job has ended, the org's entry is gone and its share free again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(checks.orgs.lock().expect("lock").is_empty());
        assert_eq!(checks.run(&a, |_| 3).await, Ok(3));
    }
}
