//! Third-party tools against a served posthorn and its `/openapi.json`: schemathesis
//! finds no answer the document does not describe, and a client that
//! openapi-python-client generates from the document makes the Fullstory calls.
//!
//! The tools live in the virtual environment `scripts/setup-python` makes (`.venv`, or
//! `$POSTHORN_TEST_VENV`); the README's test command runs it first.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::helpers::TestDb;
use crate::receiver::TestReceiver;

use super::Serve;

const KEY: &str = "tools-admin-key-0123456789abcdef";

fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var_os("POSTHORN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let venv = if venv.is_absolute() {
        venv
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(venv)
    };
    let bin = venv.join("bin").join(tool);
    assert!(
        bin.exists(),
        "{} is missing: run ./scripts/setup-python (the README's test command does)",
        bin.display()
    );
    bin
}

/// Runs `cmd` to its end within `within`: exit status and stdout+stderr.
async fn run(mut cmd: Command, within: Duration) -> (bool, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .expect("the tool ends in time")
        .expect("the tool runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn server(db: &TestDb) -> Serve {
    Serve::start(
        db,
        &[
            ("POSTHORN_BOOTSTRAP_KEY", KEY),
            ("POSTHORN_ALLOW_PRIVATE_TARGETS", "true"),
            // The per-key limit would answer most generated requests 429 (which the
            // document lists); lifted so that the operations themselves are tested.
            ("POSTHORN_RATE_LIMIT", "100000"),
            ("POSTHORN_RETRY_SCHEDULE", "1s"),
        ],
    )
    .await
}

/// schemathesis with the four checks the document must pass: no 5xx, no status the
/// operation does not list, every answer matches its schema and content type.
/// `GET /listen` is left out: it is a stream that never ends by itself. `revoke_key`
/// too: the stateful phase would revoke the run's own key.
#[tokio::test]
async fn schemathesis_finds_nothing_the_document_does_not_say_on_sqlite() {
    let db = TestDb::new().await;
    let server = server(&db).await;
    // Its cache goes to the working directory: keep it out of the repository.
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(venv_bin("schemathesis"));
    cmd.current_dir(scratch.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .args([
            "run",
            &format!("{}/openapi.json", server.base),
            "--header",
            &format!("Authorization: Bearer {KEY}"),
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance",
            "--exclude-path",
            "/webhooks/v1/listen",
            "--exclude-operation-id",
            "revoke_key",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--workers",
            "2",
        ]);
    let (ok, out) = run(cmd, Duration::from_secs(600)).await;
    assert!(ok, "schemathesis failed:\n{out}");
    assert!(out.contains("passed"), "{out}");
    assert!(!out.contains(" failed,"), "{out}");
}

/// A client generated from the served document by openapi-python-client, used as
/// generated, makes the seven Fullstory calls and a publish.
#[tokio::test]
async fn a_generated_python_client_makes_the_fullstory_calls_on_sqlite() {
    let db = TestDb::new().await;
    let server = server(&db).await;
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let document = reqwest::get(format!("{}/openapi.json", server.base))
        .await
        .expect("document")
        .text()
        .await
        .expect("text");
    let spec = dir.path().join("openapi.json");
    std::fs::write(&spec, document).expect("write");
    let bin = venv_bin("openapi-python-client");
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut generate = Command::new(&bin);
    generate.env("PATH", &path).current_dir(dir.path()).args([
        "generate",
        "--path",
        "openapi.json",
        "--meta",
        "none",
        "--output-path",
        "posthorn_client",
    ]);
    let (ok, out) = run(generate, Duration::from_secs(120)).await;
    assert!(ok, "generation failed:\n{out}");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tools/generated_client.py");
    let mut calls = Command::new(venv_bin("python"));
    calls
        .env("PYTHONPATH", dir.path())
        .arg(script)
        .arg(&server.base)
        .arg(KEY)
        .arg(receiver.url("/generated"));
    let (ok, out) = run(calls, Duration::from_secs(60)).await;
    assert!(ok, "the generated client's calls failed:\n{out}");
    assert!(out.contains("\nok "), "{out}");
}
