//! Short identifiers carried by every position and checkpoint.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Longest id held inline; Redis and Valkey replication ids are 40 hex characters.
const INLINE: usize = 46;

/// An identifier (a replication id, a sink's run id). Every unit of a stream carries its
/// position, so a copy must neither allocate nor touch a shared reference count: an
/// `Arc<str>` here was cloned by the engine and dropped by the sink once per unit while
/// other threads read the applied position, and that one counter's cache line was 9% of
/// tandem's CPU into a cluster. Ids up to 46 bytes are held inline; longer ones (never
/// sent by Redis or Valkey, but a checkpoint read from a target can hold anything) are
/// shared.
#[derive(Clone)]
pub struct ShortId(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl ShortId {
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Shared(s) => s.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever built from a &str, cut at its full length.
            Repr::Inline { len, bytes } => std::str::from_utf8(&bytes[..*len as usize])
                .expect("an inline id is the bytes of a str"),
            Repr::Shared(s) => s,
        }
    }
}

impl From<&str> for ShortId {
    fn from(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            ShortId(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            ShortId(Repr::Shared(Arc::from(s)))
        }
    }
}

impl From<String> for ShortId {
    fn from(s: String) -> Self {
        ShortId::from(s.as_str())
    }
}

impl Deref for ShortId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for ShortId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ShortId {}

impl std::hash::Hash for ShortId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_any_length_keep_their_text() {
        for len in [0, 1, 40, INLINE, INLINE + 1, 200] {
            let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let id = ShortId::from(text.as_str());
            assert_eq!(id.as_str(), text);
            assert_eq!(id.clone(), id);
            assert_eq!(format!("{id}"), text);
        }
        assert_ne!(ShortId::from("a1"), ShortId::from("b1"));
        assert_ne!(ShortId::from("ab"), ShortId::from("abc"));
    }
}
