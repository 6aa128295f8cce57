//! List pagination: every endpoint exactly once across pages, the `limit` default and
//! clamp, small limits, and refused limits and tokens.

use std::collections::HashSet;

use crate::helpers::spawn_app;

use super::{create_many, create_url, id_of, page_ids, EP, FS_ID, FS_URL};

// ---------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn paging_visits_every_endpoint_exactly_once() {
    let app = spawn_app().await;
    let mut expected = HashSet::new();
    for i in 0..7 {
        let body = create_url(&app, &format!("https://example.com/page/{i}")).await;
        expected.insert(id_of(&body));
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("{EP}?limit=3&paginationToken={t}"),
            None => format!("{EP}?limit=3"),
        };
        let resp = app.get(&path).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        let ids = page_ids(&resp.body);
        sizes.push(ids.len());
        seen.extend(ids);
        match resp.body.get("nextPaginationToken") {
            Some(t) => {
                let t = t.as_str().expect("token is a string");
                assert!(!t.is_empty(), "an empty token must be omitted");
                token = Some(t.to_owned());
            }
            None => break,
        }
        assert!(sizes.len() < 10, "pagination never ended");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an endpoint was seen twice: {seen:?}"
    );
    assert_eq!(unique, expected);
}

#[tokio::test]
async fn limit_defaults_to_and_is_clamped_at_100() {
    let app = spawn_app().await;
    let all = create_many(&app, 105).await;
    let mut first_pages = Vec::new();
    for path in [
        EP.to_owned(),
        format!("{EP}?limit=500"),
        format!("{EP}?limit=100"),
    ] {
        let resp = app.get(&path).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
        assert_eq!(page_ids(&resp.body).len(), 100, "{path}");
        let token = resp.body["nextPaginationToken"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no next token"))
            .to_owned();
        first_pages.push(page_ids(&resp.body));
        let rest = app
            .get(&format!("{EP}?limit=500&paginationToken={token}"))
            .await;
        assert_eq!(rest.status, 200, "{}", rest.text);
        assert_eq!(page_ids(&rest.body).len(), 5);
        assert!(rest.body.get("nextPaginationToken").is_none());
        let mut union: HashSet<String> = page_ids(&resp.body).into_iter().collect();
        union.extend(page_ids(&rest.body));
        assert_eq!(union, all);
    }
    assert_eq!(first_pages[0], first_pages[1]);
}

#[tokio::test]
async fn limit_zero_means_the_default() {
    let app = spawn_app().await;
    create_many(&app, 105).await;
    let resp = app.get(&format!("{EP}?limit=0")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(page_ids(&resp.body).len(), 100);
    assert!(
        resp.body["nextPaginationToken"].is_string(),
        "{}",
        resp.text
    );
}

#[tokio::test]
async fn small_limits_are_honoured() {
    let app = spawn_app().await;
    for i in 0..4 {
        create_url(&app, &format!("https://example.com/{i}")).await;
    }
    for (limit, n) in [(1, 1), (2, 2), (4, 4), (5, 4)] {
        let resp = app.get(&format!("{EP}?limit={limit}")).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(page_ids(&resp.body).len(), n, "limit={limit}");
        assert_eq!(
            resp.body.get("nextPaginationToken").is_some(),
            limit < 4,
            "limit={limit}: {}",
            resp.text
        );
    }
}

#[tokio::test]
async fn negative_or_non_numeric_limit_is_invalid() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    for limit in ["-1", "abc", "1.5", "10x"] {
        let resp = app.get(&format!("{EP}?limit={limit}")).await;
        resp.assert_error(400, "invalid_field");
        assert!(
            resp.body["message"]
                .as_str()
                .unwrap_or("")
                .contains("limit"),
            "message should name limit: {}",
            resp.text
        );
    }
}

#[tokio::test]
async fn garbage_pagination_token_is_invalid() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    for token in ["garbage", "%21%21%21", "AAAA", "bm90LWEtdG9rZW4"] {
        let resp = app.get(&format!("{EP}?paginationToken={token}")).await;
        resp.assert_error(400, "invalid_field");
        let resp = app.get(&format!("{EP}?pagination_token={token}")).await;
        resp.assert_error(400, "invalid_field");
    }
}

#[tokio::test]
async fn a_huge_limit_is_clamped() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let resp = app.get(&format!("{EP}?limit=1000000000000")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(page_ids(&resp.body), vec![FS_ID.to_owned()]);
}
