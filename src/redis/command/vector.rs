//! Vector set writes (Redis 8's built-in `vectorset` module), propagated verbatim as a
//! native replica receives them. Only the set is a key.

use super::{CommandSpec, Family, Flags, K1};

const fn w(name: &'static str, arity: i16) -> CommandSpec {
    CommandSpec::new(name, Family::Vector, arity, Flags::WRITE, K1)
}

pub(super) static COMMANDS: &[CommandSpec] = &[w("VADD", -5), w("VREM", 3), w("VSETATTR", 4)];
