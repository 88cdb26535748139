//! `status` and `history` rendering (tables and JSON) of every record the parser accepts from
//! arbitrary bytes: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = initguard::cli::render_record(data);
});
