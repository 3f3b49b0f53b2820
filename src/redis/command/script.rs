//! Verbatim scripts and function calls. Redis 5+ normally propagates script *effects*,
//! but verbatim EVAL/EVALSHA still appear from servers with `lua-replicate-commands no`;
//! the `_RO` forms are harmless if they ever show up.

use super::{CommandSpec, Family, Flags, KeySpec};

/// `EVAL script numkeys key… arg…`.
const KEYS: KeySpec = KeySpec::NumKeys {
    numkeys_at: 2,
    first_key: 3,
    dest: None,
};

const fn sc(name: &'static str) -> CommandSpec {
    CommandSpec::new(
        name,
        Family::Script,
        -3,
        Flags::WRITE.union(Flags::SCRIPT),
        KEYS,
    )
}

pub(super) static COMMANDS: &[CommandSpec] = &[
    sc("EVAL"),
    sc("EVALSHA"),
    sc("EVALSHA_RO"),
    sc("EVAL_RO"),
    sc("FCALL"),
    sc("FCALL_RO"),
];
