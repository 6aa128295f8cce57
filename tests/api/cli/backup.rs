//! `posthorn backup` of a running SQLite store, and a restore from it: every pending
//! delivery is still delivered.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{Node, TestDb};
use crate::receiver::TestReceiver;

use super::{assert_clean_failure, posthorn, run_to_end};

/// The embedded store, whatever store the suite runs on.
mod on_sqlite {
    use super::*;
    use crate::helpers::Backend;

    #[tokio::test]
    async fn a_backup_of_a_running_store_restores_with_every_pending_delivery() {
        let db = TestDb::of(Backend::Sqlite).await;
        let rx = TestReceiver::start().await;
        // An API-only node: what it accepts stays pending.
        let mut node = Node::start(&db.url, &[("POSTHORN_WORKERS", "false")]).await;
        let created = node
            .post(
                "/webhooks/v1/endpoints",
                &json!({"url": rx.url("/restored"), "secret": "restore-secret-1"}),
            )
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        for i in 0..5 {
            let r = node
                .post(
                    "/webhooks/v1/events",
                    &json!({"eventName": "note.created", "data": {"i": i}}),
                )
                .await;
            assert_eq!(r.status, 202, "{}", r.text);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let to = dir.path().join("backup.db");
        let mut cmd = posthorn(dir.path());
        cmd.args(["backup", "--database", &db.url, "--to"]).arg(&to);
        let out = run_to_end(cmd).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for file in [to.clone(), dir.path().join("backup.db.master-key")] {
            let mode = std::fs::metadata(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "{} is mode {:o}",
                file.display(),
                mode & 0o777
            );
        }
        // A second backup to the same file is refused and leaves the first alone.
        let before = std::fs::metadata(&to).expect("backup").len();
        let mut again = posthorn(dir.path());
        again
            .args(["backup", "--database", &db.url, "--to"])
            .arg(&to);
        assert_clean_failure(&run_to_end(again).await, "exists already");
        assert_eq!(std::fs::metadata(&to).expect("backup").len(), before);
        // The original goes away; a server on the backup delivers everything.
        assert!(node.terminate().await.success());
        drop(db);
        let restored = format!("sqlite://{}", to.display());
        let _node = Node::start(&restored, &[]).await;
        let got = rx.wait_for("/restored", 5, Duration::from_secs(20)).await;
        assert_eq!(rx.ids("/restored").len(), 5, "{} requests", got.len());
    }

    #[tokio::test]
    async fn backup_refuses_postgres_with_a_pointer_to_its_tools() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = posthorn(dir.path());
        cmd.args([
            "backup",
            "--database",
            "postgres://x@127.0.0.1:1/x",
            "--to",
            "b.db",
        ]);
        assert_clean_failure(&run_to_end(cmd).await, "pg_dump");
    }
}
