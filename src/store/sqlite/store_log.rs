//! The delivery log's and the web pages' store traits on SQLite (`Log`, `Web`): reads
//! on a read-only connection, the few writes (sessions) on the writer thread, as in
//! `store.rs`.

use super::*;

#[async_trait]
impl Log for SqliteStore {
    async fn get_event(&self, org: &OrgId, event: &EventId) -> StoreResult<EventRecord> {
        let (org, event) = (org.clone(), event.clone());
        self.readers
            .run(move |c| log::get_event(c, &org, &event))
            .await
    }

    async fn event_deliveries(
        &self,
        org: &OrgId,
        event: &EventId,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let (org, event) = (org.clone(), event.clone());
        self.readers
            .run(move |c| log::event_deliveries(c, &org, &event))
            .await
    }

    async fn list_deliveries(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        filter: &DeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>> {
        let (org, filter) = (org.clone(), filter.clone());
        self.readers
            .run(move |c| log::list_deliveries(c, &org, endpoint, &filter))
            .await
    }

    async fn get_delivery(&self, org: &OrgId, delivery: DeliveryId) -> StoreResult<DeliveryRecord> {
        let org = org.clone();
        self.readers
            .run(move |c| log::get_delivery(c, &org, delivery))
            .await
    }

    async fn list_attempts(
        &self,
        org: &OrgId,
        delivery: DeliveryId,
    ) -> StoreResult<Vec<AttemptView>> {
        let org = org.clone();
        self.readers
            .run(move |c| log::list_attempts(c, &org, delivery))
            .await
    }

    async fn endpoint_stats(
        &self,
        endpoint: EndpointUid,
        since: &[Timestamp],
    ) -> StoreResult<Vec<WindowCounts>> {
        let since = since.to_vec();
        self.readers
            .run(move |c| log::endpoint_stats(c, endpoint, &since))
            .await
    }
}

#[async_trait]
impl Web for SqliteStore {
    async fn insert_web_session(&self, session: &WebSessionRecord) -> StoreResult<()> {
        let session = session.clone();
        self.writer
            .run(true, move |w| web::insert_session(w.conn, &session))
            .await
    }

    async fn find_web_session(&self, hash: &KeyHash) -> StoreResult<Option<WebSessionRecord>> {
        let hash = *hash;
        self.readers.run(move |c| web::find_session(c, &hash)).await
    }

    async fn revoke_web_session(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<()> {
        let hash = *hash;
        self.writer
            .run(true, move |w| web::revoke_session(w.conn, &hash, now))
            .await
    }

    async fn trim_grant_sessions(
        &self,
        grant: &KeyHash,
        keep: u32,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let grant = *grant;
        self.writer
            .run(true, move |w| {
                web::trim_grant_sessions(w.conn, &grant, keep, now)
            })
            .await
    }

    async fn prune_web_sessions(&self, now: Timestamp) -> StoreResult<u64> {
        self.writer
            .run(true, move |w| web::prune_sessions(w.conn, now))
            .await
    }

    async fn list_org_deliveries(
        &self,
        org: &OrgId,
        filter: &OrgDeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>> {
        let (org, filter) = (org.clone(), filter.clone());
        self.readers
            .run(move |c| web::list_org_deliveries(c, &org, &filter))
            .await
    }

    async fn stats_series(
        &self,
        org: &OrgId,
        endpoint: Option<EndpointUid>,
        from: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Vec<BucketCounts>> {
        let org = org.clone();
        self.readers
            .run(move |c| web::stats_series(c, &org, endpoint, from, until))
            .await
    }

    async fn count_failed(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> StoreResult<u64> {
        let org = org.clone();
        self.readers
            .run(move |c| web::count_failed(c, &org, endpoint, since, until))
            .await
    }
}
