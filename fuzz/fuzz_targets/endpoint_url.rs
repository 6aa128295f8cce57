//! Endpoint URLs and ids: any text is a URL or a reason, and an accepted URL's id
//! names it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::domain::{EndpointId, EndpointUrl};

fuzz_target!(|text: &str| {
    if let Ok(url) = EndpointUrl::parse(text) {
        assert_eq!(url.id().url().as_deref(), Some(url.as_str()));
    }
    let _ = EndpointId::from_raw(text).url();
});
