use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn create_then_get_an_endpoint() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": "https://example.com/fullstory-webhooks"}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    assert_eq!(
        created.body["id"],
        "aHR0cHM6Ly9leGFtcGxlLmNvbS9mdWxsc3Rvcnktd2ViaG9va3M"
    );
    let got = app
        .get("/webhooks/v1/endpoints/aHR0cHM6Ly9leGFtcGxlLmNvbS9mdWxsc3Rvcnktd2ViaG9va3M")
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["url"], "https://example.com/fullstory-webhooks");
    assert!(got.body.get("secret").is_none());
}

/// Tests of the embedded store whatever store the suite runs on.
mod on_sqlite {
    use crate::helpers::{spawn_app_on, Backend};

    /// One process per SQLite file: a second `serve` on it refuses to start.
    #[tokio::test]
    async fn a_second_server_on_one_sqlite_file_refuses_to_start() {
        let app = spawn_app_on(Backend::Sqlite, |_| {}).await;
        let config = posthorn::config::ServeConfig::with_database(app.database_url.clone());
        let Err(err) = posthorn::server::Server::bind(config).await else {
            panic!("a second server started on the same SQLite file");
        };
        assert!(
            format!("{err:#}").contains("another `posthorn serve`"),
            "{err:#}"
        );
    }
}
