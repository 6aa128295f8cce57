//! The store traits on PostgreSQL: each method runs its SQL on the pool (the SQL is in
//! the files named after what it does: `publish.rs`, `queue.rs`, `admin.rs`, ...) and
//! keeps the node's caches right.

use super::*;

impl Store for PgStore {
    fn default_master_key_file(&self) -> Option<PathBuf> {
        None
    }

    fn public_ids(&self) -> &PublicIds {
        &self.ids
    }
}

#[async_trait]
impl Queue for PgStore {
    async fn publish(&self, batch: PublishBatch) -> StoreResult<PublishResult> {
        publish::publish(&self.pool, batch).await
    }

    async fn fan_out(&self, org: &OrgId, routes: &[(String, String)]) -> StoreResult<Vec<u64>> {
        // From the cache while it is trusted (endpoint changes notify every node), else
        // one read.
        let Some(cache) = self.cache() else {
            return publish::fan_out(&self.pool, org, routes).await;
        };
        let (cached, generation) = cache.fan_outs(org, routes);
        if let Some(counts) = cached.iter().copied().collect::<Option<Vec<u64>>>() {
            return Ok(counts);
        }
        let counts = publish::fan_out(&self.pool, org, routes).await?;
        let read: Vec<_> = routes.iter().zip(counts.iter().copied()).collect();
        cache.put_fan_outs(org, &read, generation);
        Ok(counts)
    }

    async fn claim_due(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let mut claimed = Vec::new();
        for (row, not_before) in retrying(|| flow::pump(&self.queue_pool, request)).await? {
            let mut c = row.into_claimed(request.token)?;
            c.not_before = not_before.map(Timestamp::from_millis);
            claimed.push(c);
        }
        for row in retrying(|| queue::claim_due(&self.queue_pool, request)).await? {
            claimed.push(row.into_claimed(request.token)?);
        }
        Ok(claimed)
    }

    async fn record_attempts(
        &self,
        records: Arc<[AttemptRecord]>,
        now: Timestamp,
        policy: HealthPolicy,
    ) -> StoreResult<()> {
        queue::record_attempts(
            &self.queue_pool,
            &records,
            now,
            &policy,
            self.operator.as_ref(),
            &self.ids,
        )
        .await
    }

    async fn release(
        &self,
        token: ClaimToken,
        deliveries: Vec<DeliveryId>,
        at: Timestamp,
    ) -> StoreResult<()> {
        if queue::release(&self.queue_pool, token, &deliveries, at).await? > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn park_endpoint(
        &self,
        endpoint: EndpointUid,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<()> {
        queue::park_endpoint(&self.queue_pool, endpoint, now, until).await
    }

    async fn retry_delivery(
        &self,
        org: &OrgId,
        delivery: DeliveryId,
        now: Timestamp,
    ) -> StoreResult<DeliveryRecord> {
        if queue::retry_delivery(&self.pool, org, delivery, now).await? > 0 {
            self.wake.notify_one();
        }
        log::get_delivery(&self.pool, org, delivery).await
    }

    async fn recover_failed(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let queued = queue::recover_failed(&self.pool, org, endpoint, since, until, now).await?;
        if queued > 0 {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    async fn prune(&self, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
        queue::prune(&self.queue_pool, cutoff, batch).await
    }

    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        queue::next_due(&self.pool).await
    }

    async fn pending_count(&self) -> StoreResult<u64> {
        queue::pending_count(&self.pool).await
    }

    fn wakeups(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    async fn watch(&self, shutdown: CancellationToken) {
        listen::run(self, shutdown).await
    }
}

#[async_trait]
impl Admin for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.into()))
    }

    async fn meta_insert_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        admin::meta_insert_if_absent(&self.pool, key, value).await
    }

    async fn ensure_org(&self, org: &OrgId, now: Timestamp) -> StoreResult<()> {
        admin::ensure_org(&self.pool, org, now).await?;
        self.cache.forget_catalog(org);
        Ok(())
    }

    async fn count_active_api_keys(&self) -> StoreResult<u64> {
        admin::count_active_keys(&self.pool).await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        admin::insert_key(&self.pool, key).await
    }

    async fn insert_api_key_if_absent(&self, key: &ApiKeyRecord) -> StoreResult<KeyInsert> {
        admin::insert_key_if_absent(&self.pool, key).await
    }

    async fn find_api_key(&self, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>> {
        let Some(cache) = self.cache() else {
            return admin::find_key(&self.pool, hash).await;
        };
        let generation = match cache.key(hash) {
            Ok(record) => return Ok(Some(record)),
            Err(generation) => generation,
        };
        let found = admin::find_key(&self.pool, hash).await?;
        if let Some(record) = &found {
            cache.put_key(record, generation);
        }
        Ok(found)
    }

    async fn list_api_keys(&self, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
        admin::list_keys(&self.pool, org).await
    }

    async fn revoke_api_key(&self, org: &OrgId, id: &str, now: Timestamp) -> StoreResult<()> {
        let revoked = admin::revoke_key(&self.pool, org, id, now).await;
        self.cache.forget_key_id(id);
        revoked
    }

    async fn hit_rate_window(&self, key_id: &str, window_ms: i64) -> StoreResult<Option<u32>> {
        admin::hit_rate_window(&self.pool, key_id, window_ms)
            .await
            .map(Some)
    }

    async fn list_event_types(&self, org: &OrgId) -> StoreResult<Arc<Vec<EventTypeRecord>>> {
        let cache = self.cache();
        let generation = match cache.map(|c| c.catalog(org)) {
            Some(Ok(types)) => return Ok(types),
            Some(Err(generation)) => generation,
            None => 0,
        };
        let types = admin::list_types(&self.pool, org).await?;
        Ok(match cache {
            Some(c) => c.put_catalog(org, types, generation),
            None => Arc::new(types),
        })
    }

    async fn get_event_type(
        &self,
        org: &OrgId,
        name: &str,
    ) -> StoreResult<Option<EventTypeRecord>> {
        admin::get_type(&self.pool, org, name).await
    }

    async fn create_event_type(
        &self,
        org: &OrgId,
        event_type: &EventTypeRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        let created = admin::create_type(&self.pool, org, event_type, now).await;
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
        let updated = admin::update_type(&self.pool, org, name, change, now).await;
        self.cache.forget_catalog(org);
        updated
    }

    async fn event_type_version(
        &self,
        org: &OrgId,
        name: &str,
        version: i64,
    ) -> StoreResult<Option<EventTypeVersion>> {
        admin::type_version(&self.pool, org, name, version).await
    }

    async fn list_subcategories(
        &self,
        org: &OrgId,
        event_name: &str,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<SubcategoryRecord>> {
        admin::list_subcategories(&self.pool, org, event_name, after, limit).await
    }

    async fn subcategory_exists(
        &self,
        org: &OrgId,
        event_name: &str,
        token: &str,
    ) -> StoreResult<bool> {
        let cache = self.cache();
        if cache.is_some_and(|c| c.has_subcategory(org, event_name, token)) {
            return Ok(true);
        }
        let exists = admin::subcategory_exists(&self.pool, org, event_name, token).await?;
        if let (true, Some(c)) = (exists, cache) {
            c.put_subcategory(org, event_name, token);
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
        admin::create_subcategory(&self.pool, org, event_name, token, display_name, now).await
    }

    async fn create_endpoint(&self, new: &NewEndpoint) -> StoreResult<EndpointRecord> {
        let created = endpoints::create(&self.pool, new, self.operator.as_ref()).await;
        self.cache.forget_fan_outs(&new.org_id);
        created
    }

    async fn create_endpoint_within(
        &self,
        new: &NewEndpoint,
        most: u32,
    ) -> StoreResult<EndpointRecord> {
        let created =
            endpoints::create_within(&self.pool, new, Some(most), self.operator.as_ref()).await;
        self.cache.forget_fan_outs(&new.org_id);
        created
    }

    async fn get_endpoint(&self, org: &OrgId, url: &str) -> StoreResult<EndpointRecord> {
        endpoints::get(&self.pool, org, url).await
    }

    async fn list_endpoints(
        &self,
        org: &OrgId,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<EndpointRecord>> {
        endpoints::list(&self.pool, org, after, limit).await
    }

    async fn update_endpoint(
        &self,
        org: &OrgId,
        url: &str,
        patch: &EndpointPatch,
    ) -> StoreResult<EndpointRecord> {
        let updated = endpoints::update(&self.pool, org, url, patch, self.operator.as_ref()).await;
        self.cache.forget_fan_outs(org);
        updated
    }

    async fn delete_endpoint(&self, org: &OrgId, url: &str, now: Timestamp) -> StoreResult<()> {
        let deleted = endpoints::delete(&self.pool, org, url, now, self.operator.as_ref()).await;
        self.cache.forget_fan_outs(org);
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
        endpoints::rotate_secret(&self.pool, org, url, sealed_secret, old_expires, now).await
    }
}

#[async_trait]
impl Log for PgStore {
    async fn get_event(&self, org: &OrgId, event: &EventId) -> StoreResult<EventRecord> {
        log::get_event(&self.pool, org, event).await
    }

    async fn event_deliveries(
        &self,
        org: &OrgId,
        event: &EventId,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        log::event_deliveries(&self.pool, org, event).await
    }

    async fn list_deliveries(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        filter: &DeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>> {
        log::list_deliveries(&self.pool, org, endpoint, filter).await
    }

    async fn get_delivery(&self, org: &OrgId, delivery: DeliveryId) -> StoreResult<DeliveryRecord> {
        log::get_delivery(&self.pool, org, delivery).await
    }

    async fn list_attempts(
        &self,
        org: &OrgId,
        delivery: DeliveryId,
    ) -> StoreResult<Vec<AttemptView>> {
        log::list_attempts(&self.pool, org, delivery).await
    }

    async fn endpoint_stats(
        &self,
        endpoint: EndpointUid,
        since: &[Timestamp],
    ) -> StoreResult<Vec<WindowCounts>> {
        log::endpoint_stats(&self.pool, endpoint, since).await
    }
}

#[async_trait]
impl Web for PgStore {
    async fn insert_web_session(&self, session: &WebSessionRecord) -> StoreResult<()> {
        web::insert_session(&self.pool, session).await
    }

    async fn find_web_session(&self, hash: &KeyHash) -> StoreResult<Option<WebSessionRecord>> {
        web::find_session(&self.pool, hash).await
    }

    async fn revoke_web_session(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<()> {
        web::revoke_session(&self.pool, hash, now).await
    }

    async fn trim_grant_sessions(
        &self,
        grant: &KeyHash,
        keep: u32,
        now: Timestamp,
    ) -> StoreResult<u64> {
        web::trim_grant_sessions(&self.pool, grant, keep, now).await
    }

    async fn prune_web_sessions(&self, now: Timestamp) -> StoreResult<u64> {
        web::prune_sessions(&self.pool, now).await
    }

    async fn list_org_deliveries(
        &self,
        org: &OrgId,
        filter: &OrgDeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>> {
        web::list_org_deliveries(&self.pool, org, filter).await
    }

    async fn stats_series(
        &self,
        org: &OrgId,
        endpoint: Option<EndpointUid>,
        from: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Vec<BucketCounts>> {
        web::stats_series(&self.pool, org, endpoint, from, until).await
    }

    async fn count_failed(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> StoreResult<u64> {
        web::count_failed(&self.pool, org, endpoint, since, until).await
    }
}
