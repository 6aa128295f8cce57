//! `posthorn serve` options and failures: unusable databases, a busy port, SIGTERM,
//! every option as a flag, the default database, and the master key.

use std::net::TcpListener as StdListener;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{free_port, TestDb};

use super::{
    assert_clean_failure, assert_no_key_file, endpoint_count, posthorn, run_to_end, Serve,
};

#[tokio::test]
async fn serve_on_a_busy_port_fails_cleanly() {
    let db = TestDb::new().await;
    let taken = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut cmd = posthorn(db.dir.path());
    cmd.arg("serve")
        .envs(db.env())
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{port}"))
        .env("POSTHORN_BOOTSTRAP_KEY", "busy-port-key-0123456789");
    let out = run_to_end(cmd).await;
    assert_clean_failure(&out, &port.to_string());
    drop(taken);
}

#[tokio::test]
async fn sigterm_stops_serve_promptly_with_exit_0() {
    let db = TestDb::new().await;
    let server = Serve::start(
        &db,
        &[("POSTHORN_BOOTSTRAP_KEY", "sigterm-key-0123456789abc")],
    )
    .await;
    let (status, _) = server
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some("sigterm-key-0123456789abc"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let port = server.port;
    let (status, took, lines) = server.terminate().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}:\n{}",
        lines.join("\n")
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after exit"
    );
}

#[tokio::test]
async fn every_serve_option_is_also_a_flag() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut cmd = posthorn(db.dir.path());
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--database",
        &db.url,
        "--bootstrap-key",
        "flag-key-0123456789abcdef",
        "--bootstrap-org",
        "o-flag",
    ]);
    if let Some(key) = db.master_key() {
        cmd.args(["--master-key", key]);
    }
    let server = Serve::spawn(cmd, port).await;
    let (status, body) = server
        .call(
            Method::GET,
            "/webhooks/v1/keys",
            Some("flag-key-0123456789abcdef"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = server.terminate().await;
    assert!(status.success());
    if let Some(file) = db.sqlite_file() {
        assert!(file.exists(), "database not where --database said");
    } else {
        assert_no_key_file(db.dir.path());
    }
}

#[tokio::test]
async fn a_given_master_key_is_used_and_a_wrong_one_is_refused_cleanly() {
    let db = TestDb::new().await;
    let first = "11".repeat(32);
    let server = Serve::start(
        &db,
        &[
            ("POSTHORN_MASTER_KEY", &first),
            ("POSTHORN_BOOTSTRAP_KEY", "master-key-test-0123456789"),
        ],
    )
    .await;
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some("master-key-test-0123456789"),
            Some(
                &json!({"url": "https://example.com/sealed", "secret": "sealed-secret-0123456789"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, lines) = server.terminate().await;
    assert!(status.success());
    assert_no_key_file(db.dir.path());
    assert!(
        !lines.iter().any(|l| l.contains(&first)),
        "master key logged"
    );

    // The same database with another master key would garble every secret: refuse to start.
    let second = "22".repeat(32);
    let mut cmd = posthorn(db.dir.path());
    cmd.arg("serve")
        .envs(db.env())
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("POSTHORN_MASTER_KEY", &second)
        .env("POSTHORN_BOOTSTRAP_KEY", "master-key-test-0123456789");
    let out = run_to_end(cmd).await;
    assert_clean_failure(&out, "master key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(&second) && !stderr.contains(&first));

    // The right key still works.
    let server = Serve::start(
        &db,
        &[
            ("POSTHORN_MASTER_KEY", &first),
            ("POSTHORN_BOOTSTRAP_KEY", "master-key-test-0123456789"),
        ],
    )
    .await;
    assert_eq!(
        endpoint_count(&server, "master-key-test-0123456789").await,
        1
    );
    let (status, _, _) = server.terminate().await;
    assert!(status.success());
}

/// The embedded store, whatever store the suite runs on.
mod on_sqlite {
    use super::*;

    #[tokio::test]
    async fn settings_that_make_no_sense_are_refused_before_anything_is_created() {
        let cases = [
            ("POSTHORN_BOOTSTRAP_KEY", "short-key-0123456789"),
            ("POSTHORN_ATTEMPT_TIMEOUT", "0s"),
            ("POSTHORN_RETRY_SCHEDULE", "1s,,3s"),
            ("POSTHORN_RETRY_SCHEDULE", "1s,soon"),
            ("POSTHORN_MAX_IN_FLIGHT", "0"),
            ("POSTHORN_MAX_IN_FLIGHT_PER_ENDPOINT", "500"),
            ("POSTHORN_LEASE_MARGIN", "10ms"),
            ("POSTHORN_MAX_CONNECTIONS", "0"),
            ("POSTHORN_HEADER_TIMEOUT", "0s"),
            ("POSTHORN_MASTER_KEY", "not-a-key"),
        ];
        for (var, value) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cmd = posthorn(dir.path());
            cmd.arg("serve")
                .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()))
                .env(var, value);
            let out = run_to_end(cmd).await;
            assert_clean_failure(&out, var);
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .expect("read dir")
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert!(left.is_empty(), "{var}={value} left files: {left:?}");
        }
    }

    #[tokio::test]
    async fn serve_with_an_unusable_database_fails_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing_dir = format!("sqlite://{}", dir.path().join("no/such/dir/x.db").display());
        for url in ["mysql://x", missing_dir.as_str()] {
            let mut cmd = posthorn(dir.path());
            cmd.arg("serve")
                .env("POSTHORN_DATABASE_URL", url)
                .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()));
            let out = run_to_end(cmd).await;
            assert_clean_failure(&out, "database");
        }
    }

    #[tokio::test]
    async fn default_database_is_posthorn_db_in_the_working_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = posthorn(dir.path());
        cmd.arg("serve")
            .env("POSTHORN_LISTEN", format!("127.0.0.1:{port}"))
            .env("POSTHORN_BOOTSTRAP_KEY", "default-db-key-0123456789");
        let server = Serve::spawn(cmd, port).await;
        let (status, _) = server
            .call(
                Method::GET,
                "/webhooks/v1/endpoints",
                Some("default-db-key-0123456789"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        // Event payloads and key hashes: readable by the owner alone, like the key file.
        use std::os::unix::fs::PermissionsExt;
        for name in [
            "posthorn.db",
            "posthorn.db-wal",
            "posthorn.db-shm",
            "posthorn.db.master-key",
        ] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{name} is mode {:o}", mode & 0o777);
        }
        let (status, _, _) = server.terminate().await;
        assert!(status.success());
        assert!(dir.path().join("posthorn.db").exists(), "no ./posthorn.db");
        assert!(
            dir.path().join("posthorn.db.master-key").exists(),
            "no key file beside the default database"
        );
    }
}

/// PostgreSQL, whatever store the suite runs on.
mod on_postgres {
    use super::super::{key_count, keys_create, printed_key};
    use super::*;
    use crate::helpers::Backend;

    #[tokio::test]
    async fn serve_on_postgres_without_a_master_key_fails_cleanly() {
        // Nodes sharing a database must share the key, so none is made up.
        let db = TestDb::of(Backend::Postgres).await;
        let mut cmd = posthorn(db.dir.path());
        cmd.arg("serve")
            .env("POSTHORN_DATABASE_URL", &db.url)
            .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("POSTHORN_BOOTSTRAP_KEY", "no-master-key-0123456789");
        let out = run_to_end(cmd).await;
        assert_clean_failure(&out, "POSTHORN_MASTER_KEY");
        assert_no_key_file(db.dir.path());
    }

    #[tokio::test]
    async fn serve_on_an_unreachable_or_missing_postgres_database_fails_cleanly() {
        let db = TestDb::of(Backend::Postgres).await;
        let cluster = crate::helpers::PgCluster::shared();
        let nobody = format!("postgres://postgres@127.0.0.1:{}/posthorn", free_port());
        let missing = cluster.url("no_such_database");
        // Each says what happened, not that a pool timed out.
        for (url, says) in [
            (nobody.as_str(), "connection refused"),
            (missing.as_str(), "does not exist"),
        ] {
            let mut cmd = posthorn(db.dir.path());
            cmd.arg("serve")
                .envs(db.env())
                .env("POSTHORN_DATABASE_URL", url)
                .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()));
            let out = run_to_end(cmd).await;
            assert_clean_failure(&out, "PostgreSQL");
            assert_clean_failure(&out, says);
        }
    }

    #[tokio::test]
    async fn migrate_and_keys_create_work_on_a_fresh_postgres_database() {
        let db = TestDb::of(Backend::Postgres).await;
        for _ in 0..2 {
            let mut cmd = posthorn(db.dir.path());
            cmd.args(["migrate", "--database", &db.url]);
            let out = run_to_end(cmd).await;
            assert!(
                out.status.success(),
                "migrate: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let key = printed_key(&keys_create(db.dir.path(), &db.url, "o-cli", "admin").await);
        let server = Serve::start(&db, &[("POSTHORN_BOOTSTRAP_ORG", "o-cli")]).await;
        assert_eq!(
            key_count(&server, &key).await,
            1,
            "no bootstrap key was minted"
        );
        let (status, _, lines) = server.terminate().await;
        assert!(status.success(), "{}", lines.join("\n"));
        assert!(
            !lines.iter().any(|l| l.contains("ph_")),
            "a key was minted although one existed:\n{}",
            lines.join("\n")
        );
    }
}

#[tokio::test]
async fn openapi_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = posthorn(dir.path());
    cmd.arg("openapi")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    // The reader goes away before anything is written (`posthorn openapi | head -0`).
    drop(child.stdout.take());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("ends")
        .expect("waited");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}
