//! Geo writes. GEORADIUS[BYMEMBER] are writes only with STORE/STOREDIST, which is the
//! only form Redis propagates.

use super::{CommandSpec, Family, Flags, K1, KeyError, KeySpec, range};
use bytes::Bytes;

const fn w(name: &'static str, arity: i16, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(name, Family::Geo, arity, Flags::WRITE, keys)
}

pub(super) static COMMANDS: &[CommandSpec] = &[
    w("GEOADD", -5, K1),
    w("GEORADIUS", -6, KeySpec::Custom(georadius_keys)),
    w("GEORADIUSBYMEMBER", -5, KeySpec::Custom(georadius_keys)),
    w("GEOSEARCHSTORE", -8, range(1, 2, 1)),
];

/// The source key, then the STORE or STOREDIST destination. Mirrors Redis's
/// `georadiusGetKeys`: options are scanned from argument 5 and the last STORE* wins.
fn georadius_keys(_command: &'static str, argv: &[Bytes]) -> Result<Vec<usize>, KeyError> {
    let mut store = None;
    let mut i = 5;
    while i < argv.len() {
        let arg = &argv[i];
        if (arg.eq_ignore_ascii_case(b"STORE") || arg.eq_ignore_ascii_case(b"STOREDIST"))
            && i + 1 < argv.len()
        {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    let mut keys = Vec::with_capacity(2);
    keys.push(1);
    keys.extend(store);
    Ok(keys)
}
