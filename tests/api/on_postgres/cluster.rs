//! The throwaway cluster harness itself (crates/throwaway-pg), checked here.

use std::time::Duration;

use sqlx::Connection;
use throwaway_pg::{wait_closed, PgCluster};

/// The harness itself: a dedicated cluster serves, stops (its port closes), starts again
/// on the same port with its data, and is gone, directory and all, when dropped.
#[tokio::test]
async fn a_dedicated_cluster_stops_starts_and_cleans_up() {
    let cluster = tokio::task::spawn_blocking(PgCluster::dedicated)
        .await
        .expect("cluster");
    let url = cluster.create_database().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql("CREATE TABLE t (x INT); INSERT INTO t VALUES (7)")
        .execute(&mut conn)
        .await
        .expect("write");
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        wait_closed(cluster.port(), Duration::from_secs(5));
        cluster.start();
        cluster
    })
    .await
    .expect("restart");
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "a connection survived the restart"
    );
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("reconnect");
    let x: i32 = sqlx::query_scalar("SELECT x FROM t")
        .fetch_one(&mut conn)
        .await
        .expect("read");
    assert_eq!(x, 7, "data kept across the restart");
    let (root, port) = (cluster.root().to_path_buf(), cluster.port());
    drop(cluster);
    assert!(!root.exists(), "{} left behind", root.display());
    wait_closed(port, Duration::from_secs(5));
}
