//! The record parser on arbitrary bytes: it returns a record or an error, never panics; and a
//! record it accepts survives its own round trip.
#![no_main]

use initguard::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::from_json(data) {
        let again = Record::from_json(&record.to_json());
        assert!(again.is_ok(), "a parsed record must parse again after to_json");
    }
});
