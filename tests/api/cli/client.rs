//! posthorn as a client: each command against a real server, its output (table and
//! `--output json`), its exit code, profiles, and the NDJSON publish.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Sql, TestDb};
use crate::receiver::{Reply, TestReceiver};

use super::{assert_clean_failure, posthorn, run_to_end, Serve};

pub const KEY: &str = "client-admin-key-0123456789abcdef";

pub async fn server(db: &TestDb) -> Serve {
    Serve::start(
        db,
        &[
            ("POSTHORN_BOOTSTRAP_KEY", KEY),
            ("POSTHORN_ALLOW_PRIVATE_TARGETS", "true"),
            ("POSTHORN_RETRY_SCHEDULE", "1s"),
        ],
    )
    .await
}

/// `posthorn ARGS` as a client of `server` (by `POSTHORN_URL` and `POSTHORN_API_KEY`),
/// with its config file in `dir`.
pub async fn cli(dir: &Path, server: &Serve, key: &str, args: &[&str]) -> Output {
    let mut cmd = posthorn(dir);
    cmd.env("POSTHORN_URL", &server.base)
        .env("POSTHORN_API_KEY", key)
        .env("POSTHORN_CONFIG", dir.join("config.toml"))
        .args(args);
    run_to_end(cmd).await
}

/// The JSON a successful `--output json` command printed.
#[track_caller]
pub fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "command failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn every_client_command_works_against_a_server() {
    let db = TestDb::new().await;
    let server = server(&db).await;
    let receiver = TestReceiver::start().await;
    let dir = db.dir.path();
    let run = |args: &'static [&'static str]| cli(dir, &server, KEY, args);

    let types = json_of(&run(&["event-types", "list", "-o", "json"]).await);
    assert!(
        types["eventDefs"].to_string().contains("note.created"),
        "{types}"
    );
    let table = stdout(&run(&["event-types", "list"]).await);
    assert!(table.starts_with("EVENT NAME"), "{table}");
    assert!(table.contains("segment.trend.alert"), "{table}");

    let url = receiver.url("/cli");
    let out = cli(
        dir,
        &server,
        KEY,
        &[
            "endpoints",
            "create",
            &url,
            "--event-type",
            "note.created",
            "-o",
            "json",
        ],
    )
    .await;
    let created = json_of(&out);
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{created}"
    );

    let table = stdout(&run(&["endpoints", "list"]).await);
    assert!(table.contains(&url) && table.contains(&id), "{table}");
    let listed = json_of(&run(&["endpoints", "list", "--output", "json"]).await);
    assert_eq!(listed["endpoints"][0]["id"], id.as_str());
    let got = json_of(&cli(dir, &server, KEY, &["endpoints", "get", &id, "-o", "json"]).await);
    assert_eq!(got["url"], url.as_str());
    let updated = json_of(
        &cli(
            dir,
            &server,
            KEY,
            &[
                "endpoints",
                "update",
                &id,
                "--event-type",
                "note.created",
                "--event-type",
                "segment.created",
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(
        updated["eventTypes"].as_array().map(Vec::len),
        Some(2),
        "{updated}"
    );

    let sub = json_of(
        &run(&[
            "subcategories",
            "create",
            "segment.trend.alert",
            "--display-name",
            "Hot <b>",
            "-o",
            "json",
        ])
        .await,
    );
    let token = sub["subcategory"].as_str().expect("token").to_owned();
    let subs = stdout(&run(&["subcategories", "list", "segment.trend.alert"]).await);
    assert!(subs.contains(&token) && subs.contains("Hot <b>"), "{subs}");

    let published = json_of(
        &run(&[
            "events",
            "publish",
            "note.created",
            "--data",
            r#"{"n":1}"#,
            "-o",
            "json",
        ])
        .await,
    );
    assert_eq!(published["deliveries"], 1, "{published}");
    let event_id = published["id"].as_str().expect("event id").to_owned();
    receiver.wait_for("/cli", 1, Duration::from_secs(10)).await;
    let event = json_of(
        &cli(
            dir,
            &server,
            KEY,
            &["events", "get", &event_id, "-o", "json"],
        )
        .await,
    );
    assert_eq!(event["eventName"], "note.created");

    let log = json_of(
        &cli(
            dir,
            &server,
            KEY,
            &["deliveries", "list", "--endpoint", &id, "-o", "json"],
        )
        .await,
    );
    let delivery = log["deliveries"][0]["id"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    let table = stdout(&cli(dir, &server, KEY, &["deliveries", "attempts", &delivery]).await);
    assert!(table.starts_with("NO") && table.contains("200"), "{table}");
    let retried = json_of(
        &cli(
            dir,
            &server,
            KEY,
            &["deliveries", "retry", &delivery, "-o", "json"],
        )
        .await,
    );
    assert!(retried.is_object(), "{retried}");
    receiver.wait_for("/cli", 2, Duration::from_secs(10)).await;

    let key = json_of(&run(&["keys", "create", "--role", "publisher", "-o", "json"]).await);
    let (new_key, key_id) = (
        key["key"].as_str().expect("key").to_owned(),
        key["id"].as_str().expect("key id").to_owned(),
    );
    let keys = stdout(&run(&["keys", "list"]).await);
    assert!(keys.contains(&key_id) && !keys.contains(&new_key), "{keys}");
    // A publisher may publish but not manage endpoints: 403 is exit 4.
    let denied = cli(dir, &server, &new_key, &["endpoints", "list"]).await;
    assert_eq!(denied.status.code(), Some(4));
    assert_clean_failure(&denied, "forbidden");
    let revoked = cli(dir, &server, KEY, &["keys", "revoke", &key_id]).await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let refused = cli(
        dir,
        &server,
        &new_key,
        &["events", "publish", "note.created"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(4));
    assert_clean_failure(&refused, "unauthorized");

    let missing = run(&["endpoints", "get", "bm9zdWNo"]).await;
    assert_eq!(missing.status.code(), Some(3));
    assert_clean_failure(&missing, "resource_not_found");
    let bad = run(&["events", "publish", "no.such.type"]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert_clean_failure(&bad, "invalid_field");

    let deleted = cli(dir, &server, KEY, &["endpoints", "delete", &id]).await;
    assert!(deleted.status.success());
    let gone = cli(dir, &server, KEY, &["endpoints", "get", &id]).await;
    assert_eq!(gone.status.code(), Some(3));

    let completions = run(&["completions", "bash"]).await;
    assert!(stdout(&completions).contains("_posthorn"), "completions");
}

#[tokio::test]
async fn no_server_or_an_unreachable_one_is_a_clear_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = posthorn(dir.path());
    cmd.env("POSTHORN_CONFIG", dir.path().join("none.toml"))
        .args(["endpoints", "list"]);
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert_clean_failure(&out, "posthorn login");

    let mut cmd = posthorn(dir.path());
    cmd.env("POSTHORN_CONFIG", dir.path().join("none.toml"))
        .args([
            "endpoints",
            "list",
            "--url",
            "http://127.0.0.1:1",
            "--key",
            "k",
        ]);
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(5));
    assert_clean_failure(&out, "cannot reach http://127.0.0.1:1");
}

#[tokio::test]
async fn login_writes_a_private_profile_that_later_commands_use() {
    let db = TestDb::new().await;
    let server = server(&db).await;
    let dir = db.dir.path();
    let config = dir.join("profiles.toml");
    let login = |key: &str| {
        let mut cmd = posthorn(dir);
        cmd.env("POSTHORN_CONFIG", &config).args([
            "login",
            "--url",
            &server.base,
            "--key",
            key,
            "--profile",
            "work",
        ]);
        run_to_end(cmd)
    };
    let wrong = login("not-a-key-of-this-server").await;
    assert_eq!(wrong.status.code(), Some(4));
    assert!(!config.exists(), "a refused key is not saved");

    let out = login(KEY).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&config)
        .expect("config")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&config).expect("read");
    assert!(
        text.contains("[profiles.work]") && text.contains(&server.base),
        "{text}"
    );

    // No URL or key but the profile (the default now, and by name).
    for args in [
        &["endpoints", "list", "-o", "json"][..],
        &["keys", "list", "--profile", "work"][..],
    ] {
        let mut cmd = posthorn(dir);
        cmd.env("POSTHORN_CONFIG", &config).args(args);
        let out = run_to_end(cmd).await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cmd = posthorn(dir);
    cmd.env("POSTHORN_CONFIG", &config)
        .args(["keys", "list", "--profile", "other"]);
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert_clean_failure(&out, "no profile \"other\"");
}

#[tokio::test]
async fn an_ndjson_file_of_10000_events_is_published_and_bad_lines_are_reported() {
    let db = TestDb::new().await;
    let server = server(&db).await;
    let dir = db.dir.path();
    let file = dir.join("events.ndjson");
    let mut text = String::new();
    for line in 1..=10_000 {
        text.push_str(&match line {
            17 => "this is not json".to_owned(),
            5000 => r#"{"eventName":"no.such.type","data":{}}"#.to_owned(),
            9999 => r#"{"eventName":"note.created","data":"not an object"}"#.to_owned(),
            n => format!(r#"{{"eventName":"note.created","data":{{"n":{n}}}}}"#),
        });
        text.push('\n');
    }
    std::fs::write(&file, text).expect("write");
    let path = file.to_string_lossy().into_owned();
    let out = cli(
        dir,
        &server,
        KEY,
        &["events", "publish", "--file", &path, "-o", "json"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    assert_eq!(summary["accepted"], 9997, "{summary}");
    let lines: Vec<u64> = summary["refused"]
        .as_array()
        .expect("refused")
        .iter()
        .map(|r| r["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, [17, 5000, 9999], "{summary}");
    assert!(
        summary["refused"][1]["message"]
            .to_string()
            .contains("eventName"),
        "{summary}"
    );

    let sql = Sql::new(&db.url);
    assert_eq!(sql.i64("SELECT COUNT(*) FROM events").await, 9997);
    sql.close().await;

    // The table form says the same in words.
    let out = cli(dir, &server, KEY, &["events", "publish", "--file", &path]).await;
    let said = stdout(&out);
    assert!(
        said.contains("accepted 9997 events") && said.contains("line 5000: "),
        "{said}"
    );
}

#[tokio::test]
async fn recover_shows_the_count_and_follows_the_deliveries() {
    let db = TestDb::new().await;
    let server = server(&db).await;
    let receiver = TestReceiver::start().await;
    receiver.always("/down", Reply::Status(500));
    let dir = db.dir.path();
    let url = receiver.url("/down");
    let id = json_of(
        &cli(
            dir,
            &server,
            KEY,
            &["endpoints", "create", &url, "-o", "json"],
        )
        .await,
    )["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for _ in 0..3 {
        json_of(
            &cli(
                dir,
                &server,
                KEY,
                &["events", "publish", "note.created", "-o", "json"],
            )
            .await,
        );
    }
    // One attempt and one retry a second later, then failed.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = json_of(
            &cli(
                dir,
                &server,
                KEY,
                &[
                    "deliveries",
                    "list",
                    "--endpoint",
                    &id,
                    "--state",
                    "failed",
                    "-o",
                    "json",
                ],
            )
            .await,
        );
        if log["deliveries"].as_array().map_or(0, Vec::len) == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries did not fail: {log}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    receiver.always("/down", Reply::Status(200));
    let out = cli(
        dir,
        &server,
        KEY,
        &["recover", "--endpoint", &id, "--since", "1h", "-o", "json"],
    )
    .await;
    let summary = json_of(&out);
    assert_eq!(summary["queued"], 3, "{summary}");
    assert_eq!(summary["pending"], 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
}
