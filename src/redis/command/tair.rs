//! Tair module writes (TairString, TairHash, TairZset), passed through verbatim. Every
//! one takes its only key first. Arities are minimums, kept loose on purpose: the
//! module validates its own syntax, tandem only needs the key. The *STORE forms take
//! their keys as ZUNIONSTORE does.

use super::zset::STORE;
use super::{CommandSpec, Family, Flags, K1, KeySpec};

const fn w(name: &'static str, arity: i16) -> CommandSpec {
    wk(name, arity, K1)
}

const fn wk(name: &'static str, arity: i16, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(name, Family::Tair, arity, Flags::WRITE, keys)
}

pub(super) static COMMANDS: &[CommandSpec] = &[
    // TairString (and its CAS/CAD on native strings).
    w("CAD", 3),
    w("CAS", -4),
    w("EXAPPEND", -3),
    w("EXCAD", 3),
    w("EXCAS", -4),
    w("EXGAE", -4),
    w("EXINCRBY", -3),
    w("EXINCRBYFLOAT", -3),
    w("EXPREPEND", -3),
    w("EXSET", -3),
    w("EXSETVER", 3),
    // TairHash.
    w("EXHDEL", -3),
    w("EXHDELREPEAT", -3),
    w("EXHDELREPL", -3),
    w("EXHDELWITHVER", -4),
    w("EXHEXPIRE", -4),
    w("EXHEXPIREAT", -4),
    w("EXHINCRBY", -4),
    w("EXHINCRBYFLOAT", -4),
    w("EXHMSET", -4),
    w("EXHMSETWITHOPTS", -5),
    w("EXHPERSIST", 3),
    w("EXHPEXPIRE", -4),
    w("EXHPEXPIREAT", -4),
    w("EXHSET", -4),
    w("EXHSETNX", 4),
    w("EXHSETVER", 4),
    // TairZset.
    w("EXZADD", -4),
    // Propagated as `EXBZPOPMIN key`, without the timeout (see redis/compat).
    w("EXBZPOPMAX", -2),
    w("EXBZPOPMIN", -2),
    wk("EXZDIFFSTORE", -4, STORE),
    w("EXZINCRBY", 4),
    wk("EXZINTERSTORE", -4, STORE),
    w("EXZPOPMAX", -2),
    w("EXZPOPMIN", -2),
    w("EXZREM", -3),
    w("EXZREMRANGEBYLEX", 4),
    w("EXZREMRANGEBYRANK", 4),
    w("EXZREMRANGEBYSCORE", 4),
    wk("EXZUNIONSTORE", -4, STORE),
];
