//! The camel/snake normaliser of request bodies: any JSON is normalised or refused
//! with a 4xx.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::http::input::normalize;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Err(e) = normalize(value) {
            assert!(e.status().is_client_error());
        }
    }
});
