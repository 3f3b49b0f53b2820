#![no_main]
//! Any input: parse every event, decode every value (alternating raw-then-decode and
//! direct chunk decode). Must return Ok or Err, never panic or blow up memory.

use libfuzzer_sys::fuzz_target;
use tandem::redis::rdb::*;

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions {
        verify_checksum: false,
        max_string: 1 << 24,
        ..Default::default()
    };
    let Ok(mut p) = RdbParser::with_options(data, opts) else {
        return;
    };
    let version = p.version();
    let mut n = 0u32;
    loop {
        match p.next_event() {
            Ok(Some(Event::Key(k))) => {
                n += 1;
                let mut kc = KeyCommands::new(&k, CommandOptions::default());
                if n % 2 == 0 {
                    match p.read_raw(256) {
                        Ok(RawValue::Complete(raw)) => {
                            if let Ok(mut v) = RdbParser::for_value(&raw[..], version, opts) {
                                while let Ok(Some(_)) = kc.next_batch(&mut v) {}
                            }
                            continue;
                        }
                        Ok(RawValue::TooLarge) => {}
                        Err(_) => return,
                    }
                }
                loop {
                    match kc.next_batch(&mut p) {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
});
