//! Bitmap writes.

use super::{CommandSpec, Family, Flags, K1, KeySpec, range};

const fn w(name: &'static str, arity: i16, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(name, Family::Bitmap, arity, Flags::WRITE, keys)
}

pub(super) static COMMANDS: &[CommandSpec] = &[
    w("BITFIELD", -2, K1),
    // BITOP op dest key…: the operation word comes before the keys.
    w("BITOP", -4, range(2, -1, 1)),
    w("SETBIT", 4, K1),
];
