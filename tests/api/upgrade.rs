//! A database written by the first store shape (posthorn at 3efa46e; the fixtures and
//! the script that made them are in tests/fixtures/) opens with today's code, migrates
//! in place and loses nothing: keys (a revoked one stays revoked), the catalog,
//! endpoints with their secrets, the delivery log, and pending work, which is delivered.

use std::time::Duration;

use posthorn::delivery::sign;
use serde_json::{json, Value};

use crate::helpers::{spawn_in, Backend, TestApp, TestDb};
use crate::receiver::TestReceiver;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const ADMIN: &str = "fixture-admin-key-0123456789";
/// `POSTHORN_MASTER_KEY` of the PostgreSQL fixture (SQLite's is the key file beside it).
const PG_MASTER: &str = "5c1d3e7f9a2b4c6d8e0f1a3b5c7d9e2f4a6b8c0d1e3f5a7b9c2d4e6f8a0b1c3d";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .to_owned()
}

/// A store holding the fixture of its kind, and the names of the fixture's text files.
async fn v1_store() -> (TestDb, &'static str) {
    let db = TestDb::new().await;
    match db.backend() {
        Backend::Sqlite => {
            let file = db.sqlite_file().expect("file");
            std::fs::copy(format!("{FIXTURES}/v1-sqlite/v1.db"), &file).expect("copy database");
            std::fs::copy(
                format!("{FIXTURES}/v1-sqlite/v1.db.master-key"),
                db.master_key_file().expect("key file"),
            )
            .expect("copy key file");
            (db, "v1-sqlite/")
        }
        Backend::Postgres => {
            let dump = fixture("v1-postgres.sql");
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
                .await
                .expect("connect");
            sqlx::raw_sql(&dump)
                .execute(&mut conn)
                .await
                .expect("load the dump");
            (db, "v1-postgres.")
        }
    }
}

async fn get(app: &TestApp, key: &str, path: &str) -> Value {
    let r = app.call(reqwest::Method::GET, path, Some(key), None).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    r.body
}

fn endpoint_id(url: &str) -> String {
    posthorn::domain::EndpointId::for_url(url)
        .as_str()
        .to_owned()
}

#[tokio::test]
async fn a_v1_database_migrates_in_place_and_loses_nothing() {
    let (db, files) = v1_store().await;
    let is_pg = db.backend() == Backend::Postgres;
    let app = spawn_in(db, |c| {
        c.bootstrap_key = Some(ADMIN.into());
        c.bootstrap_org = "o-fixture".into();
        c.master_key = is_pg.then(|| PG_MASTER.to_owned());
    })
    .await;
    assert_eq!(
        app.sql_i64("SELECT MAX(version) FROM _sqlx_migrations")
            .await,
        12,
        "migrated to the current schema"
    );

    // Keys: the admin and publisher keys work, the revoked one stays revoked.
    let revoked = fixture(&format!("{files}revoked.txt"));
    let r = app
        .call(
            reqwest::Method::GET,
            "/webhooks/v1/event-types",
            Some(&revoked),
            None,
        )
        .await;
    r.assert_error(401, "unauthorized");
    let keys = get(&app, ADMIN, "/webhooks/v1/keys").await;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(3), "{keys}");

    // The catalog kept its own type and subcategory.
    let types = get(&app, ADMIN, "/webhooks/v1/event-types").await;
    assert!(types["eventDefs"]
        .as_array()
        .expect("defs")
        .iter()
        .any(|t| t["eventName"] == "invoice.paid"));
    let sub = fixture(&format!("{files}sub.txt"));
    let subs = get(
        &app,
        ADMIN,
        "/webhooks/v1/event-types/metric.alert/subcategories",
    )
    .await;
    assert_eq!(subs["subcategoryDefs"][0]["subcategory"], sub.as_str());
    assert_eq!(subs["subcategoryDefs"][0]["displayName"], "CPU high");

    // Endpoints: five live (one deleted), one disabled, subscriptions intact.
    let list = get(&app, ADMIN, "/webhooks/v1/endpoints").await;
    let endpoints = list["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 5, "{list}");
    let ok_url = "http://127.0.0.1:18432/ok";
    let ok = endpoints
        .iter()
        .find(|e| e["url"] == ok_url)
        .expect("the ok endpoint");
    assert_eq!(
        ok["eventTypes"][1],
        json!({"eventName": "metric.alert", "subcategory": sub})
    );
    assert!(endpoints
        .iter()
        .any(|e| e["url"] == "https://example.com/disabled" && e["enabled"] == false));

    // The delivery log: what was delivered and what failed, with its attempts.
    let delivered = get(
        &app,
        ADMIN,
        &format!("/webhooks/v1/endpoints/{}/deliveries", endpoint_id(ok_url)),
    )
    .await;
    let delivered = delivered["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone();
    assert_eq!(delivered.len(), 4);
    assert!(delivered
        .iter()
        .all(|d| d["state"] == "delivered" && d["attempts"] == 1));
    let refused_url = "http://127.0.0.1:9/refused";
    let failed = get(
        &app,
        ADMIN,
        &format!(
            "/webhooks/v1/endpoints/{}/deliveries",
            endpoint_id(refused_url)
        ),
    )
    .await;
    let failed = failed["deliveries"].as_array().expect("deliveries").clone();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|d| d["state"] == "failed"));
    let attempts = get(
        &app,
        ADMIN,
        &format!(
            "/webhooks/v1/deliveries/{}/attempts",
            failed[0]["id"].as_str().expect("id")
        ),
    )
    .await;
    assert_eq!(attempts["attempts"].as_array().map(Vec::len), Some(2));

    // Ids are shown encrypted now; the decimal ids the old version showed still name
    // their deliveries (and only those: none made after the upgrade).
    let shown = failed[0]["id"].as_str().expect("id");
    assert!(shown.starts_with("dlv_") && shown.len() == 26, "{shown}");
    let legacy = app.sql_i64("SELECT MAX(id) FROM deliveries").await;
    let by_old = get(
        &app,
        ADMIN,
        &format!("/webhooks/v1/deliveries/dlv_{legacy}"),
    )
    .await;
    assert!(
        by_old["id"].as_str().is_some_and(|id| id.len() == 26),
        "{by_old}"
    );
    let after = app
        .call(
            reqwest::Method::GET,
            &format!("/webhooks/v1/deliveries/dlv_{}", legacy + 1),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(after.status, 404, "{}", after.text);

    // Pending work, never attempted, is delivered, signed with the secret sealed by the
    // old version once the endpoint points somewhere reachable.
    let rx = TestReceiver::start().await;
    let pending_url = "http://127.0.0.1:9/pending";
    let r = app
        .post(
            &format!("/webhooks/v1/endpoints/{}", endpoint_id(pending_url)),
            &json!({"url": rx.url("/pending")}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = rx.wait_for("/pending", 5, Duration::from_secs(20)).await;
    let key = sign::raw_key_bytes("fixture-secret-pending");
    for req in &got {
        let (id, ts) = (req.header("webhook-id"), req.header("webhook-timestamp"));
        let ts: i64 = ts.parse().expect("timestamp");
        assert!(
            sign::verify_standard(&key, id, ts, req.header("webhook-signature"), &req.body),
            "a delivery was not signed with the endpoint's secret"
        );
    }
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    assert!(bodies
        .iter()
        .all(|b| b["eventName"] == "invoice.paid" && b["data"]["invoice"].is_number()));

    // The publisher key publishes.
    let publisher = fixture(&format!("{files}publisher.txt"));
    let r = app
        .call(
            reqwest::Method::POST,
            "/webhooks/v1/events",
            Some(&publisher),
            Some(&json!({"eventName": "invoice.paid", "data": {"invoice": 6}})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    rx.wait_for("/pending", 6, Duration::from_secs(20)).await;
}
