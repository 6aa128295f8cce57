//! `limit` and `paginationToken`: a page or a 4xx, and never above the maximum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::http::pagination::PageParams;

fuzz_target!(|input: (String, String)| {
    let params = PageParams {
        limit: Some(input.0),
        pagination_token: Some(input.1),
    };
    match params.resolve("e", 100) {
        Ok((after, limit)) => {
            assert!((1..=100).contains(&limit));
            assert!(after.is_none_or(|seq| seq >= 0));
        }
        Err(e) => assert!(e.status().is_client_error()),
    }
});
