//! The first start's admin key, the bootstrap key and org, and `posthorn keys create`
//! beside a running server.

use reqwest::Method;
use serde_json::json;

use crate::helpers::TestDb;

use super::{assert_no_key_file, endpoint_count, key_count, keys_create, printed_key, Serve};

#[tokio::test]
async fn first_start_prints_an_admin_key_once_and_it_works() {
    let db = TestDb::new().await;
    let server = Serve::start(&db, &[]).await;
    let key = server
        .printed_key()
        .await
        .unwrap_or_else(|| panic!("no ph_ key on stderr:\n{}", server.lines().join("\n")));

    // It is an admin key.
    let (status, body) = server
        .call(Method::GET, "/webhooks/v1/keys", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/keys",
            Some(&key),
            Some(&json!({"role": "standard"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(&key),
            Some(&json!({"url": "https://example.com/first-start"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A wrong key, to check it is not logged either.
    let (status, _) = server
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some("ph_not-a-real-key-0000"),
            None,
        )
        .await;
    assert_eq!(status, 401);

    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{status}");
    let with_key: Vec<&String> = lines.iter().filter(|l| l.contains(&key)).collect();
    assert_eq!(
        with_key.len(),
        1,
        "the key must appear once, in the banner:\n{}",
        lines.join("\n")
    );
    assert_eq!(with_key[0].trim(), key, "the banner line is the key alone");
    assert!(
        !lines.iter().any(|l| l.contains("ph_not-a-real-key")),
        "a presented key was logged:\n{}",
        lines.join("\n")
    );

    // On SQLite the master key file is private; a PostgreSQL node is given its key and
    // writes no file.
    let master = db.master_key_file();
    let master_bytes = master.as_ref().map(|master| {
        let mode = std::fs::metadata(master)
            .expect("master key file beside the database")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "{}",
            master.display()
        );
        std::fs::read(master).expect("read master key")
    });
    if let Some(given) = db.master_key() {
        assert_no_key_file(db.dir.path());
        assert!(
            !lines.iter().any(|l| l.contains(given)),
            "the master key was logged"
        );
    }

    // A restart prints no new key; the first one still works; the master key stays.
    let server = Serve::start(&db, &[]).await;
    assert_eq!(endpoint_count(&server, &key).await, 1);
    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        !lines.iter().any(|l| l.contains("ph_")),
        "a key was printed again on restart:\n{}",
        lines.join("\n")
    );
    if let (Some(master), Some(bytes)) = (master, master_bytes) {
        assert_eq!(std::fs::read(&master).expect("read master key"), bytes);
    }
}

#[tokio::test]
async fn bootstrap_key_is_an_admin_of_the_bootstrap_org() {
    const BOOT: &str = "boot-secret-key-for-o-boot-0123456789";
    let db = TestDb::new().await;
    let env = [
        ("POSTHORN_BOOTSTRAP_KEY", BOOT),
        ("POSTHORN_BOOTSTRAP_ORG", "o-boot"),
    ];
    let server = Serve::start(&db, &env).await;
    let (status, body) = server
        .call(Method::GET, "/webhooks/v1/keys", Some(BOOT), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(BOOT),
            Some(&json!({"url": "https://example.com/boot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // It is in o-boot: another o-boot admin sees its endpoint; another org does not.
    let database = db.url.clone();
    let same_org = printed_key(&keys_create(db.dir.path(), &database, "o-boot", "admin").await);
    assert_eq!(endpoint_count(&server, &same_org).await, 1);
    let elsewhere =
        printed_key(&keys_create(db.dir.path(), &database, "o-elsewhere", "admin").await);
    assert_eq!(endpoint_count(&server, &elsewhere).await, 0);
    let keys = key_count(&server, BOOT).await;

    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        !lines.iter().any(|l| l.contains(BOOT)),
        "the bootstrap key was logged:\n{}",
        lines.join("\n")
    );
    assert!(
        !lines.iter().any(|l| l.contains("ph_")),
        "a key was minted although a bootstrap key was given:\n{}",
        lines.join("\n")
    );

    // A restart with the same key keeps one bootstrap key, still admin.
    let server = Serve::start(&db, &env).await;
    assert_eq!(key_count(&server, BOOT).await, keys);
    assert_eq!(endpoint_count(&server, BOOT).await, 1);
    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{status}");
    assert!(!lines.iter().any(|l| l.contains(BOOT)));
}

#[tokio::test]
async fn keys_create_works_beside_a_running_server() {
    const BOOT: &str = "boot-secret-key-for-o-x-0123456789";
    let db = TestDb::new().await;
    let server = Serve::start(
        &db,
        &[
            ("POSTHORN_BOOTSTRAP_KEY", BOOT),
            ("POSTHORN_BOOTSTRAP_ORG", "o-x"),
        ],
    )
    .await;

    // The server keeps writing while the CLI writes to the same database.
    let busy = async {
        for i in 0..60 {
            let (status, body) = server
                .call(
                    Method::POST,
                    "/webhooks/v1/event-types/metric.alert/subcategories",
                    Some(BOOT),
                    Some(&json!({"displayName": format!("s{i}")})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let database = db.url.clone();
    let ((), out) = tokio::join!(
        busy,
        keys_create(db.dir.path(), &database, "o-x", "publisher")
    );
    let key = printed_key(&out);

    // The running server knows it at once, with publisher rights.
    let (status, body) = server
        .call(Method::GET, "/webhooks/v1/event-types", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .call(
            Method::GET,
            "/webhooks/v1/event-types/metric.alert/subcategories",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["subcategoryDefs"].as_array().map(Vec::len),
        Some(60),
        "same org, same catalog"
    );
    for (method, path) in [
        (Method::GET, "/webhooks/v1/endpoints"),
        (Method::GET, "/webhooks/v1/keys"),
    ] {
        let (status, body) = server.call(method, path, Some(&key), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["code"], "forbidden");
    }
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(&key),
            Some(&json!({"url": "https://example.com/p"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // The org's admin sees the new key in the list, as a publisher key.
    let (_, body) = server
        .call(Method::GET, "/webhooks/v1/keys", Some(BOOT), None)
        .await;
    assert!(
        body["keys"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k["role"] == "publisher")),
        "{body}"
    );

    let (status, _, lines) = server.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        !lines.iter().any(|l| l.contains(&key) || l.contains(BOOT)),
        "a key was logged:\n{}",
        lines.join("\n")
    );
}

#[tokio::test]
async fn keys_create_refuses_a_bad_role_or_org() {
    let db = TestDb::new().await;
    let database = db.url.clone();
    for (org, role) in [("o-x", "root"), ("o-x", "ADMIN"), ("bad org!", "admin")] {
        let out = keys_create(db.dir.path(), &database, org, role).await;
        assert!(
            !out.status.success(),
            "{org} {role}: exit {}; stdout {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.stdout.is_empty(),
            "no key may be printed: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "say why on stderr");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
