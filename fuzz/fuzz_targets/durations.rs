//! `Retry-After` and the retry schedule: parsed or refused, never a panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use posthorn::delivery::retry::{parse_retry_after, RetryPolicy};

fuzz_target!(|text: &str| {
    let _ = parse_retry_after(text);
    let _ = RetryPolicy::parse(text, Duration::from_secs(3600));
});
