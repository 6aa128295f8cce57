//! The web console and the customer portal in a real browser: Debian's chromium driven
//! by Playwright (tests/fixtures/browser/*.py) against a real `posthorn serve` and a
//! recording receiver. Screenshots of the main screens land in target/screenshots.

mod runner;

use std::path::Path;
use std::process::Output;

use crate::helpers::{free_port, TestDb};
use crate::receiver::{Reply, TestReceiver};

use super::{keys_create, printed_key, Serve};

const KEY: &str = "browser-admin-key-0123456789abcdef";

/// `posthorn serve` for a browser: one quick retry, private targets, and `frame` as
/// the origin allowed to frame the portal.
async fn server(db: &TestDb, frame_origin: &str) -> Serve {
    Serve::start(
        db,
        &[
            ("POSTHORN_BOOTSTRAP_KEY", KEY),
            ("POSTHORN_ALLOW_PRIVATE_TARGETS", "true"),
            ("POSTHORN_RETRY_SCHEDULE", "1s"),
            ("POSTHORN_PORTAL_FRAME_ORIGINS", frame_origin),
        ],
    )
    .await
}

/// Runs a script off the async runtime, so the receiver and the server's log reader
/// keep going while the browser works.
async fn run(script: &'static str, env: Vec<(&'static str, String)>) {
    tokio::task::spawn_blocking(move || runner::run_script(script, &env))
        .await
        .expect("script thread");
}

async fn admin_key_of(dir: &Path, db: &TestDb, org: &str) -> String {
    let out: Output = keys_create(dir, &db.url, org, "admin").await;
    printed_key(&out)
}

/// No key (and no session cookie: the server never logs one) in the server's log.
#[track_caller]
fn assert_not_logged(serve: &Serve, secrets: &[&str]) {
    for line in serve.lines() {
        for s in secrets {
            assert!(!line.contains(s), "a key in the log: {line}");
        }
        assert!(
            !line.contains("posthorn_console="),
            "a cookie in the log: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_by_clicking() {
    let db = TestDb::new().await;
    let rx = TestReceiver::start().await;
    // The flaky endpoint fails both scheduled attempts, then takes the retry.
    rx.script(
        "/flaky",
        vec![
            Reply::Body(500, "<script>window.pwned = 2</script>oops"),
            Reply::Status(500),
        ],
    );
    rx.always("/down", Reply::Status(503));
    let serve = server(&db, "http://127.0.0.1:1").await;
    run(
        "console",
        vec![
            ("POSTHORN_BASE", serve.base.clone()),
            ("POSTHORN_KEY", KEY.to_owned()),
            ("RECEIVER", rx.url("")),
        ],
    )
    .await;
    assert!(
        rx.received("/ok").len() >= 2,
        "the published event and the test"
    );
    assert!(
        rx.received("/flaky").len() >= 3,
        "two failures and the retry"
    );
    assert_not_logged(&serve, &[KEY]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_in_a_frame_of_another_origin() {
    let db = TestDb::new().await;
    let rx = TestReceiver::start().await;
    let host_port = free_port();
    let host = format!("http://127.0.0.1:{host_port}");
    let serve = server(&db, &host).await;
    let other_key = admin_key_of(db.dir.path(), &db, "o-other").await;
    run(
        "portal",
        vec![
            ("POSTHORN_BASE", serve.base.clone()),
            ("POSTHORN_KEY", KEY.to_owned()),
            ("OTHER_KEY", other_key.clone()),
            ("RECEIVER", rx.url("")),
            ("HOST_PORT", host_port.to_string()),
        ],
    )
    .await;
    assert_not_logged(&serve, &[KEY, &other_key]);
}
