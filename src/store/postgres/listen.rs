//! The LISTEN connection: wakes the dispatcher when another node queued work, and
//! forgets the caches when another node changed what they hold.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::{PgStore, CACHE_CHANNEL, WORK_CHANNEL};

pub(super) async fn run(store: &PgStore, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            lost = listen_until_lost(store) => {
                store.listening.store(false, Ordering::Release);
                store.cache.clear();
                if let Some(e) = lost {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    store.listening.store(false, Ordering::Release);
}

/// Listens until the connection is lost (with the error, if there was one).
async fn listen_until_lost(store: &PgStore) -> Option<sqlx::Error> {
    let mut listener = match PgListener::connect_with(&store.pool).await {
        Ok(listener) => listener,
        Err(e) => return Some(e),
    };
    if let Err(e) = listener.listen_all([WORK_CHANNEL, CACHE_CHANNEL]).await {
        return Some(e);
    }
    // Whatever changed while nobody listened is read again, and queued work picked up.
    store.cache.clear();
    store.listening.store(true, Ordering::Release);
    store.wake.notify_one();
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) if n.channel() == CACHE_CHANNEL => store.cache.clear(),
            Ok(Some(_)) => store.wake.notify_one(),
            // The connection dropped: messages may have been missed.
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}
