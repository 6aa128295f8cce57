//! Event-type schemas: any JSON is compiled or refused with a message, and a compiled
//! schema checks any JSON without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::domain::EventSchema;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(schema), Some(instance)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(schema), Ok(instance)) = (
        serde_json::from_slice::<serde_json::Value>(schema),
        serde_json::from_slice::<serde_json::Value>(instance),
    ) else {
        return;
    };
    if let Ok(compiled) = EventSchema::compile(schema) {
        let _ = compiled.check(&instance);
    }
});
