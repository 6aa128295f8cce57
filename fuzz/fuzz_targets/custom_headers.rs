//! Custom headers of an endpoint: any JSON object of strings is accepted or refused
//! with a message, and what is accepted always makes valid request headers.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use posthorn::domain::CustomHeaders;

fuzz_target!(|data: &[u8]| {
    if let Ok(given) = serde_json::from_slice::<BTreeMap<String, String>>(data) {
        let n = given.len();
        if let Ok(headers) = CustomHeaders::parse(given) {
            assert_eq!(headers.to_header_pairs().len(), n);
            assert_eq!(headers.masked().len(), n);
        }
    }
});
