//! The store traits on SQLite: each method sends one closure to the writer thread (a
//! write) or runs it on a read-only connection (a read); the SQL is in the files named
//! after what it does (`publish.rs`, `queue.rs`, `admin.rs`, ...).

use super::*;
use crate::store::notices as told;

impl Store for SqliteStore {
    fn default_master_key_file(&self) -> Option<PathBuf> {
        Some(beside(&self.path, ".master-key"))
    }

    fn write_concurrency(&self) -> usize {
        4
    }

    fn public_ids(&self) -> &PublicIds {
        &self.ids
    }
}

impl SqliteStore {
    /// A new endpoint, unless `most` is given and its org has that many live already.
    async fn create_endpoint_in(
        &self,
        new: &NewEndpoint,
        most: Option<u32>,
    ) -> StoreResult<EndpointRecord> {
        let (new, operator) = (new.clone(), self.operator.clone());
        let org = new.org_id.clone();
        let created = self
            .writer
            .run(true, move |w| {
                if let Some(most) = most {
                    endpoints::room_for_one(w.conn, &new.org_id, most)?;
                }
                w.caches.endpoints_changed();
                let endpoint = endpoints::create(w.conn, &new)?;
                let made = told::endpoint_saved(None, &endpoint, new.now);
                notices::store(w, &made, operator.as_ref(), new.now)?;
                Ok(endpoint)
            })
            .await;
        self.cache.forget_fan_outs(&org);
        created
    }
}

#[async_trait]
impl Queue for SqliteStore {
    async fn publish(&self, batch: PublishBatch) -> StoreResult<PublishResult> {
        // Room taken for deliveries whose commit failed is given back.
        let budget = batch.lease.as_ref().map(|l| l.budget.clone());
        let give_back = move |result: PublishResult| {
            for c in result.leased.iter().filter(|_| budget.is_some()) {
                budget.iter().for_each(|b| b.give_back(c.endpoint.uid));
            }
        };
        self.writer
            .run_undoable(true, move |w| publish::publish(w, batch), give_back)
            .await
    }

    async fn fan_out(&self, org: &OrgId, routes: &[(String, String)]) -> StoreResult<Vec<u64>> {
        // From the cache (every endpoint change forgets the org's), else one read.
        let (cached, generation) = self.cache.fan_outs(org, routes);
        if let Some(counts) = cached.iter().copied().collect::<Option<Vec<u64>>>() {
            return Ok(counts);
        }
        let (owned_org, owned) = (org.clone(), routes.to_vec());
        let counts = self
            .readers
            .run(move |c| publish::fan_out(c, &owned_org, &owned))
            .await?;
        let read: Vec<_> = routes.iter().zip(counts.iter().copied()).collect();
        self.cache.put_fan_outs(org, &read, generation);
        Ok(counts)
    }

    async fn claim_due(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let request = request.clone();
        self.writer
            .run(false, move |w| queue::claim_due(w, &request))
            .await
    }

    async fn record_attempts(
        &self,
        records: Arc<[AttemptRecord]>,
        now: Timestamp,
        policy: HealthPolicy,
    ) -> StoreResult<()> {
        let operator = self.operator.clone();
        let ids = self.ids.clone();
        self.writer
            .run(false, move |w| {
                queue::record_attempts(w, &records, now, &policy, operator.as_ref(), &ids)
            })
            .await
    }

    async fn release(
        &self,
        token: ClaimToken,
        deliveries: Vec<DeliveryId>,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.writer
            .run(false, move |w| queue::release(w, token, &deliveries, at))
            .await
    }

    async fn park_endpoint(
        &self,
        endpoint: EndpointUid,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<()> {
        self.writer
            .run(false, move |w| {
                queue::park_endpoint(w, endpoint, now, until)
            })
            .await
    }

    async fn retry_delivery(
        &self,
        org: &OrgId,
        delivery: DeliveryId,
        now: Timestamp,
    ) -> StoreResult<DeliveryRecord> {
        let org = org.clone();
        self.writer
            .run(true, move |w| queue::retry_delivery(w, &org, delivery, now))
            .await
    }

    async fn recover_failed(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let org = org.clone();
        self.writer
            .run(true, move |w| {
                queue::recover_failed(w, &org, endpoint, since, until, now)
            })
            .await
    }

    async fn prune(&self, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
        self.writer
            .run(false, move |w| retention::prune(w, cutoff, batch))
            .await
    }

    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        self.readers
            .run(|c| {
                // Due deliveries, and flow queues to look at.
                let ms: Option<i64> = sql::scalar(
                    c,
                    "SELECT MIN(t) FROM ( \
                       SELECT MIN(next_attempt_ms) AS t FROM deliveries WHERE state = 'pending' AND NOT held \
                       UNION ALL SELECT MIN(flow_next_ms) FROM endpoints WHERE flow_next_ms IS NOT NULL)",
                    [],
                )?;
                Ok(ms.map(Timestamp::from_millis))
            })
            .await
    }

    async fn pending_count(&self) -> StoreResult<u64> {
        self.readers
            .run(|c| {
                let n: i64 = sql::scalar(
                    c,
                    // Through the due and held indexes (held ones are pending).
                    "SELECT (SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND NOT held) \
                       + (SELECT COUNT(*) FROM deliveries WHERE held)",
                    [],
                )?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
            .await
    }

    fn wakeups(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

#[async_trait]
impl Admin for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.readers
            .run(|c| sql::scalar::<i64>(c, "SELECT 1", []).map(|_| ()))
            .await
    }

    async fn meta_insert_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.writer
            .run(true, move |w| {
                admin::meta_insert_if_absent(w.conn, &key, &value)
            })
            .await
    }

    async fn ensure_org(&self, org: &OrgId, now: Timestamp) -> StoreResult<()> {
        let owned = org.clone();
        self.writer
            .run(true, move |w| admin::ensure_org(w.conn, &owned, now))
            .await?;
        self.cache.forget_catalog(org);
        Ok(())
    }

    async fn count_active_api_keys(&self) -> StoreResult<u64> {
        self.readers.run(admin::count_active_keys).await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let key = key.clone();
        self.writer
            .run(true, move |w| admin::insert_key(w.conn, &key))
            .await
    }

    async fn insert_api_key_if_absent(&self, key: &ApiKeyRecord) -> StoreResult<KeyInsert> {
        let owned = key.clone();
        let inserted = self
            .writer
            .run(true, move |w| admin::insert_key_if_absent(w.conn, &owned))
            .await?;
        self.cache.forget_key_hash(&key.hash);
        Ok(inserted)
    }

    async fn find_api_key(&self, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>> {
        let generation = match self.cache.key(hash) {
            Ok(record) => return Ok(Some(record)),
            Err(generation) => generation,
        };
        let owned = *hash;
        let found = self
            .readers
            .run(move |c| admin::find_key(c, &owned))
            .await?;
        if let Some(record) = &found {
            self.cache.put_key(record, generation);
        }
        Ok(found)
    }

    async fn list_api_keys(&self, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
        let org = org.clone();
        self.readers.run(move |c| admin::list_keys(c, &org)).await
    }

    async fn revoke_api_key(&self, org: &OrgId, id: &str, now: Timestamp) -> StoreResult<()> {
        let (org, owned) = (org.clone(), id.to_owned());
        let revoked = self
            .writer
            .run(true, move |w| admin::revoke_key(w.conn, &org, &owned, now))
            .await;
        self.cache.forget_key_id(id);
        revoked
    }

    async fn list_event_types(&self, org: &OrgId) -> StoreResult<Arc<Vec<EventTypeRecord>>> {
        let generation = match self.cache.catalog(org) {
            Ok(types) => return Ok(types),
            Err(generation) => generation,
        };
        let owned = org.clone();
        let types = self
            .readers
            .run(move |c| admin::list_types(c, &owned))
            .await?;
        Ok(self.cache.put_catalog(org, types, generation))
    }

    async fn get_event_type(
        &self,
        org: &OrgId,
        name: &str,
    ) -> StoreResult<Option<EventTypeRecord>> {
        let (org, name) = (org.clone(), name.to_owned());
        self.readers
            .run(move |c| admin::get_type(c, &org, &name))
            .await
    }

    async fn create_event_type(
        &self,
        org: &OrgId,
        event_type: &EventTypeRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (owned, event_type) = (org.clone(), event_type.clone());
        let created = self
            .writer
            .run(true, move |w| {
                admin::create_type(w.conn, &owned, &event_type, now)
            })
            .await;
        self.cache.forget_catalog(org);
        created
    }

    async fn update_event_type(
        &self,
        org: &OrgId,
        name: &str,
        change: &EventTypeChange,
        now: Timestamp,
    ) -> StoreResult<EventTypeRecord> {
        let (owned, name, change) = (org.clone(), name.to_owned(), change.clone());
        let updated = self
            .writer
            .run(true, move |w| {
                admin::update_type(w.conn, &owned, &name, &change, now)
            })
            .await;
        self.cache.forget_catalog(org);
        updated
    }

    async fn event_type_version(
        &self,
        org: &OrgId,
        name: &str,
        version: i64,
    ) -> StoreResult<Option<EventTypeVersion>> {
        let (org, name) = (org.clone(), name.to_owned());
        self.readers
            .run(move |c| admin::type_version(c, &org, &name, version))
            .await
    }

    async fn list_subcategories(
        &self,
        org: &OrgId,
        event_name: &str,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<SubcategoryRecord>> {
        let (org, event_name) = (org.clone(), event_name.to_owned());
        self.readers
            .run(move |c| admin::list_subcategories(c, &org, &event_name, after, limit))
            .await
    }

    async fn subcategory_exists(
        &self,
        org: &OrgId,
        event_name: &str,
        token: &str,
    ) -> StoreResult<bool> {
        if self.cache.has_subcategory(org, event_name, token) {
            return Ok(true);
        }
        let (owned, name, tok) = (org.clone(), event_name.to_owned(), token.to_owned());
        let exists = self
            .readers
            .run(move |c| admin::subcategory_exists(c, &owned, &name, &tok))
            .await?;
        if exists {
            self.cache.put_subcategory(org, event_name, token);
        }
        Ok(exists)
    }

    async fn create_subcategory(
        &self,
        org: &OrgId,
        event_name: &str,
        token: &str,
        display_name: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<SubcategoryRecord> {
        let (org, event_name, token) = (org.clone(), event_name.to_owned(), token.to_owned());
        let display_name = display_name.map(str::to_owned);
        self.writer
            .run(true, move |w| {
                admin::create_subcategory(
                    w.conn,
                    &org,
                    &event_name,
                    &token,
                    display_name.as_deref(),
                    now,
                )
            })
            .await
    }

    async fn create_endpoint(&self, new: &NewEndpoint) -> StoreResult<EndpointRecord> {
        self.create_endpoint_in(new, None).await
    }

    async fn create_endpoint_within(
        &self,
        new: &NewEndpoint,
        most: u32,
    ) -> StoreResult<EndpointRecord> {
        self.create_endpoint_in(new, Some(most)).await
    }

    async fn get_endpoint(&self, org: &OrgId, url: &str) -> StoreResult<EndpointRecord> {
        let (org, url) = (org.clone(), url.to_owned());
        self.readers
            .run(move |c| endpoints::get(c, &org, &url))
            .await
    }

    async fn list_endpoints(
        &self,
        org: &OrgId,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<EndpointRecord>> {
        let org = org.clone();
        self.readers
            .run(move |c| endpoints::list(c, &org, after, limit))
            .await
    }

    async fn update_endpoint(
        &self,
        org: &OrgId,
        url: &str,
        patch: &EndpointPatch,
    ) -> StoreResult<EndpointRecord> {
        let (org, url, patch) = (org.clone(), url.to_owned(), patch.clone());
        let operator = self.operator.clone();
        let changed_org = org.clone();
        let updated = self
            .writer
            .run(true, move |w| {
                w.caches.endpoints_changed();
                let (before, after) = endpoints::update(w.conn, &org, &url, &patch)?;
                let made = told::endpoint_saved(Some(&before), &after, patch.now);
                notices::store(w, &made, operator.as_ref(), patch.now)?;
                Ok(after)
            })
            .await;
        self.cache.forget_fan_outs(&changed_org);
        updated
    }

    async fn delete_endpoint(&self, org: &OrgId, url: &str, now: Timestamp) -> StoreResult<()> {
        let (org, url, operator) = (org.clone(), url.to_owned(), self.operator.clone());
        let changed_org = org.clone();
        let deleted = self
            .writer
            .run(true, move |w| {
                w.caches.endpoints_changed();
                let deleted = endpoints::delete(w.conn, &org, &url, now)?;
                let made = [told::endpoint_deleted(&deleted, now)?];
                notices::store(w, &made, operator.as_ref(), now)
            })
            .await;
        self.cache.forget_fan_outs(&changed_org);
        deleted
    }

    async fn rotate_secret(
        &self,
        org: &OrgId,
        url: &str,
        sealed_secret: &[u8],
        old_expires: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (org, url, sealed) = (org.clone(), url.to_owned(), sealed_secret.to_vec());
        self.writer
            .run(true, move |w| {
                w.caches.endpoints_changed();
                endpoints::rotate_secret(w.conn, &org, &url, &sealed, old_expires, now)
            })
            .await
    }
}
