//! Source positions. A position is only comparable with another position of the same
//! history: comparing offsets of two different Redis replication ids would be a guess,
//! so it is an error instead.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use super::ShortId;

/// A point in a Redis replication stream: the replication id and the number of stream
/// bytes (PING, SELECT and REPLCONF included) the master had produced up to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplPosition {
    pub replid: ShortId,
    pub offset: u64,
}

/// Two positions from different replication histories were compared.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("positions of different replication ids cannot be compared ({a} vs {b})")]
pub struct IncomparablePositions {
    pub a: String,
    pub b: String,
}

impl ReplPosition {
    pub fn new(replid: impl Into<ShortId>, offset: u64) -> Self {
        Self {
            replid: replid.into(),
            offset,
        }
    }

    /// Orders two positions of the same replication id; refuses otherwise.
    pub fn try_cmp(&self, other: &ReplPosition) -> Result<Ordering, IncomparablePositions> {
        if self.replid != other.replid {
            return Err(IncomparablePositions {
                a: self.replid.to_string(),
                b: other.replid.to_string(),
            });
        }
        Ok(self.offset.cmp(&other.offset))
    }
}

impl fmt::Display for ReplPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.replid, self.offset)
    }
}

/// Parse error for the `<replid>:<offset>` text form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid position {0:?}: expected <40-hex replid>:<offset>")]
pub struct BadPosition(pub String);

impl FromStr for ReplPosition {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.chars().take(80).collect());
        let (id, off) = s.rsplit_once(':').ok_or_else(bad)?;
        if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let offset = off.parse().map_err(|_| bad())?;
        Ok(Self::new(id, offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn refuses_cross_replid_comparison() {
        let a = ReplPosition::new(A, 10);
        let b = ReplPosition::new(B, 5);
        assert_eq!(
            a.try_cmp(&b),
            Err(IncomparablePositions {
                a: A.into(),
                b: B.into()
            })
        );
        assert_eq!(a.try_cmp(&ReplPosition::new(A, 11)), Ok(Ordering::Less));
    }

    #[test]
    fn rejects_malformed_text() {
        for s in ["", "x:1", A, &format!("{A}:-1"), &format!("{A}:z")] {
            assert!(s.parse::<ReplPosition>().is_err(), "{s:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn text_round_trip(id in "[0-9a-f]{40}", off in any::<u64>()) {
            let p = ReplPosition::new(id, off);
            prop_assert_eq!(p.to_string().parse::<ReplPosition>().unwrap(), p);
        }
    }
}
