//! The detector's key: `(db, key bytes)`, short keys stored inline.
//!
//! The detector looks every local write up in a hash map as large as the writes not yet
//! echoed back. A key behind a pointer costs a cache miss per comparison and a malloc
//! and free per write; most Redis keys are short enough to sit in the table itself.

use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

const INLINE: usize = 30;

#[derive(Clone)]
pub enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<[u8]>),
}

impl KeyBytes {
    pub fn new(key: &[u8]) -> KeyBytes {
        if key.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..key.len()].copy_from_slice(key);
            KeyBytes::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            KeyBytes::Shared(Arc::from(key))
        }
    }
}

impl Deref for KeyBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            KeyBytes::Shared(b) => b,
        }
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, other: &KeyBytes) -> bool {
        **self == **other
    }
}

impl Eq for KeyBytes {}

impl Hash for KeyBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn equal_bytes_are_equal_keys_whatever_the_storage() {
        let long = vec![b'x'; INLINE + 1];
        for k in [&b""[..], b"k", &[b'y'; INLINE], &long] {
            let a = KeyBytes::new(k);
            assert_eq!(&*a, k);
            let set: HashSet<KeyBytes> = [a.clone(), KeyBytes::new(k)].into_iter().collect();
            assert_eq!(set.len(), 1);
        }
        assert!(matches!(
            KeyBytes::new(&[1; INLINE]),
            KeyBytes::Inline { .. }
        ));
        assert!(matches!(KeyBytes::new(&long), KeyBytes::Shared(_)));
        assert_ne!(KeyBytes::new(b"ab"), KeyBytes::new(b"ab\0"));
    }
}
