#![no_main]
//! Any input to the hot-path RESP scanners: never a panic, and what they accept stays
//! inside the input (spans within the command, lengths within the buffer).

use libfuzzer_sys::fuzz_target;
use tandem::redis::scan::{Clean, Scan, clean_array, command};

fuzz_target!(|data: &[u8]| {
    let mut spans = Vec::new();
    if let Scan::Complete { used } = command(data, &mut spans) {
        assert!(used <= data.len());
        assert!(spans.iter().all(|r| r.start <= r.end && r.end + 2 <= used));
    }
    if let Clean::Yes { used, .. } = clean_array(data) {
        assert!(used <= data.len());
    }
});
