//! Per-slot checkpoint keys: `__tandem:ckpt:<id>:{<tag>}` where `<tag>` is a short
//! string hashing to the slot, so the checkpoint can sit in the same single-slot
//! transaction as the data it describes.

use std::sync::LazyLock;

use crate::redis::slot::{SLOTS, key_slot};

/// `TAGS[slot]`: the shortest (then first in base-36 order) tag hashing to `slot`.
static TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut tags: Vec<Option<String>> = vec![None; SLOTS as usize];
    let mut left = SLOTS as usize;
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n: u64 = 0;
    while left > 0 {
        // Bijective base 36: every string over DIGITS, shortest first.
        let mut s = Vec::new();
        let mut m = n;
        loop {
            s.push(DIGITS[(m % 36) as usize]);
            m /= 36;
            if m == 0 {
                break;
            }
            m -= 1;
        }
        s.reverse();
        let slot = key_slot(&s) as usize;
        if tags[slot].is_none() {
            tags[slot] = Some(String::from_utf8(s).expect("ascii"));
            left -= 1;
        }
        n += 1;
    }
    tags.into_iter().map(|t| t.expect("filled")).collect()
});

/// The hash tag of `slot` (without braces).
pub fn tag(slot: u16) -> &'static str {
    &TAGS[slot as usize]
}

/// The checkpoint key of link `id` for `slot`.
pub fn slot_ckpt_key(id: &str, slot: u16) -> String {
    format!(
        "{}{id}:{{{}}}",
        crate::redis::sink::checkpoint::PREFIX,
        tag(slot)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_short_tag_of_its_own() {
        for s in 0..SLOTS {
            assert_eq!(key_slot(tag(s).as_bytes()), s);
            assert!(tag(s).len() <= 4, "{}", tag(s));
            assert_eq!(key_slot(slot_ckpt_key("a:b", s).as_bytes()), s);
        }
    }
}
