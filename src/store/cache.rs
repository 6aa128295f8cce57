//! Read caches of API keys, event catalogs, subcategories and fan-out counts, which
//! every publish and every request looks up.
//!
//! Policy: every change to what is cached forgets the entry in the same call that makes
//! the change. On SQLite a file is served by one process, so the cache is exact (a
//! revoked key is refused at once; the `keys create` command only adds keys, and a key
//! not in the cache is looked up in the database). On PostgreSQL every change also
//! notifies the other nodes, which forget the entry when the notification arrives (and
//! forget everything whenever their notification connection was lost). Misses are not
//! cached. Fan-out counts (how many endpoints a route of an org reaches, for the bound
//! on a request's deliveries) are forgotten with every endpoint change of the org, and
//! kept at most [`FAN_OUT_TTL`], so an endpoint that posthorn disabled itself stops
//! counting soon.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::{KeyHash, OrgId};
use crate::store::{ApiKeyRecord, EventTypeRecord};

/// Past this many entries a map is emptied and refilled on demand.
const MAX_ENTRIES: usize = 10_000;

/// One org's event types.
type Catalog = Arc<Vec<EventTypeRecord>>;

/// Longest a fan-out count is used.
pub(crate) const FAN_OUT_TTL: Duration = Duration::from_secs(10);

/// Fan-out counts by (org, event type, subcategory), with when they were read.
type FanOuts = HashMap<(String, String, String), (u64, Instant)>;

#[derive(Default)]
pub(crate) struct Cache {
    /// Keys, and a generation bumped by every forget: a key read from the database
    /// before a revoke finished must not be cached after it.
    keys: Mutex<(HashMap<[u8; 32], ApiKeyRecord>, u64)>,
    /// Catalogs, and a generation bumped by every forget, as for keys: a catalog read
    /// before a change committed must not be cached after the change forgot it.
    catalogs: Mutex<(HashMap<String, Catalog>, u64)>,
    subcategories: Mutex<HashSet<(String, String, String)>>,
    /// Fan-out counts, and a generation bumped by every forget, as for catalogs.
    fan_outs: Mutex<(FanOuts, u64)>,
}

fn bounded<T>(len: usize, clear: impl FnOnce() -> T) {
    if len >= MAX_ENTRIES {
        clear();
    }
}

impl Cache {
    /// The cached key, or the generation to hand to [`Cache::put_key`] after reading
    /// it from the database.
    pub(crate) fn key(&self, hash: &KeyHash) -> Result<ApiKeyRecord, u64> {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.0.get(&hash.0).cloned().ok_or(keys.1)
    }

    /// Remembers an active key read at `generation`, unless a key was forgotten since.
    pub(crate) fn put_key(&self, record: &ApiKeyRecord, generation: u64) {
        if record.revoked.is_some() {
            return;
        }
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.1 != generation {
            return;
        }
        bounded(keys.0.len(), || keys.0.clear());
        keys.0.insert(record.hash.0, record.clone());
    }

    pub(crate) fn forget_key_id(&self, id: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.0.retain(|_, r| r.id != id);
        keys.1 += 1;
    }

    pub(crate) fn forget_key_hash(&self, hash: &KeyHash) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.0.remove(&hash.0);
        keys.1 += 1;
    }

    /// The cached catalog, or the generation to hand to [`Cache::put_catalog`] after
    /// reading it from the database.
    pub(crate) fn catalog(&self, org: &OrgId) -> Result<Arc<Vec<EventTypeRecord>>, u64> {
        let catalogs = self.catalogs.lock().unwrap_or_else(PoisonError::into_inner);
        catalogs.0.get(org.as_str()).cloned().ok_or(catalogs.1)
    }

    /// Remembers a catalog read at `generation`, unless one was forgotten since.
    pub(crate) fn put_catalog(
        &self,
        org: &OrgId,
        types: Vec<EventTypeRecord>,
        generation: u64,
    ) -> Arc<Vec<EventTypeRecord>> {
        let types = Arc::new(types);
        let mut catalogs = self.catalogs.lock().unwrap_or_else(PoisonError::into_inner);
        if catalogs.1 == generation {
            bounded(catalogs.0.len(), || catalogs.0.clear());
            catalogs.0.insert(org.as_str().to_owned(), types.clone());
        }
        types
    }

    pub(crate) fn forget_catalog(&self, org: &OrgId) {
        let mut catalogs = self.catalogs.lock().unwrap_or_else(PoisonError::into_inner);
        catalogs.0.remove(org.as_str());
        catalogs.1 += 1;
    }

    /// Forgets everything (a notification may have been missed).
    pub(crate) fn clear(&self) {
        {
            let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            keys.0.clear();
            keys.1 += 1;
        }
        {
            let mut catalogs = self.catalogs.lock().unwrap_or_else(PoisonError::into_inner);
            catalogs.0.clear();
            catalogs.1 += 1;
        }
        self.subcategories
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        {
            let mut fan_outs = self.fan_outs.lock().unwrap_or_else(PoisonError::into_inner);
            fan_outs.0.clear();
            fan_outs.1 += 1;
        }
    }

    /// The cached fan-out count of each route of `org` (`None`: read it), and the
    /// generation to hand to [`Cache::put_fan_outs`] with what was read.
    pub(crate) fn fan_outs(
        &self,
        org: &OrgId,
        routes: &[(String, String)],
    ) -> (Vec<Option<u64>>, u64) {
        let fan_outs = self.fan_outs.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = routes
            .iter()
            .map(|(name, sub)| {
                fan_outs
                    .0
                    .get(&(org.as_str().to_owned(), name.clone(), sub.clone()))
                    .filter(|(_, at)| at.elapsed() < FAN_OUT_TTL)
                    .map(|(n, _)| *n)
            })
            .collect();
        (counts, fan_outs.1)
    }

    /// Remembers counts read at `generation`, unless an endpoint changed since.
    pub(crate) fn put_fan_outs(
        &self,
        org: &OrgId,
        counts: &[(&(String, String), u64)],
        generation: u64,
    ) {
        let mut fan_outs = self.fan_outs.lock().unwrap_or_else(PoisonError::into_inner);
        if fan_outs.1 != generation {
            return;
        }
        let now = Instant::now();
        for ((name, sub), n) in counts {
            bounded(fan_outs.0.len(), || fan_outs.0.clear());
            fan_outs.0.insert(
                (org.as_str().to_owned(), name.clone(), sub.clone()),
                (*n, now),
            );
        }
    }

    /// After a change of one of `org`'s endpoints (created, deleted, switched on or
    /// off, subscriptions).
    pub(crate) fn forget_fan_outs(&self, org: &OrgId) {
        let mut fan_outs = self.fan_outs.lock().unwrap_or_else(PoisonError::into_inner);
        fan_outs.0.retain(|(o, _, _), _| o != org.as_str());
        fan_outs.1 += 1;
    }

    pub(crate) fn has_subcategory(&self, org: &OrgId, event: &str, token: &str) -> bool {
        let subs = self
            .subcategories
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subs.contains(&(org.as_str().to_owned(), event.to_owned(), token.to_owned()))
    }

    pub(crate) fn put_subcategory(&self, org: &OrgId, event: &str, token: &str) {
        let mut subs = self
            .subcategories
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        bounded(subs.len(), || subs.clear());
        subs.insert((org.as_str().to_owned(), event.to_owned(), token.to_owned()));
    }
}
