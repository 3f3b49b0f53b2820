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

/// A MongoDB operation time: the oplog `Timestamp` (seconds, increment) as one ordered
/// number, so lag clocks and comparisons treat it like an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct OpTime(pub u64);

impl OpTime {
    pub fn new(secs: u32, inc: u32) -> Self {
        OpTime(((secs as u64) << 32) | inc as u64)
    }
    pub fn secs(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn inc(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for OpTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.secs(), self.inc())
    }
}

/// Where a MongoDB source stands: the operation time of the last applied change in the
/// history `history` (a replica set's name, or a deployment watched through a change
/// stream), and for change streams the resume token to continue after it.
///
/// The token is kept as opaque bytes (its raw BSON): servers differ in how they encode
/// it, and nothing may decode it. Order comes from `ts` alone, which is why positions
/// of different histories, or an oplog position and a change-stream one, refuse to
/// compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MongoPosition {
    pub history: String,
    pub ts: OpTime,
    pub token: Option<Vec<u8>>,
}

impl MongoPosition {
    pub fn oplog(history: impl Into<String>, ts: OpTime) -> Self {
        MongoPosition {
            history: history.into(),
            ts,
            token: None,
        }
    }

    pub fn stream(history: impl Into<String>, ts: OpTime, token: Vec<u8>) -> Self {
        MongoPosition {
            history: history.into(),
            ts,
            token: Some(token),
        }
    }

    /// Orders two positions of one history and one kind; refuses otherwise.
    pub fn try_cmp(&self, other: &MongoPosition) -> Result<Ordering, IncomparablePositions> {
        if self.history != other.history || self.token.is_some() != other.token.is_some() {
            return Err(IncomparablePositions {
                a: self.to_string(),
                b: other.to_string(),
            });
        }
        Ok(self.ts.cmp(&other.ts))
    }
}

impl fmt::Display for MongoPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.token.is_some() {
            "stream"
        } else {
            "oplog"
        };
        write!(f, "{}@{kind}:{}", self.history, self.ts)
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

    #[test]
    fn mongo_positions_refuse_other_histories_and_kinds() {
        let a = MongoPosition::oplog("rs0", OpTime::new(10, 2));
        let b = MongoPosition::oplog("rs0", OpTime::new(10, 3));
        assert_eq!(a.try_cmp(&b), Ok(Ordering::Less));
        assert!(
            a.try_cmp(&MongoPosition::oplog("rs1", OpTime::new(1, 1)))
                .is_err()
        );
        let s = MongoPosition::stream("rs0", OpTime::new(10, 2), vec![1, 2]);
        assert!(
            a.try_cmp(&s).is_err(),
            "oplog and stream positions compared"
        );
        assert_eq!(OpTime::new(7, 9).to_string(), "7.9");
        assert!(OpTime::new(1, u32::MAX) < OpTime::new(2, 0));
    }

    proptest! {
        #[test]
        fn text_round_trip(id in "[0-9a-f]{40}", off in any::<u64>()) {
            let p = ReplPosition::new(id, off);
            prop_assert_eq!(p.to_string().parse::<ReplPosition>().unwrap(), p);
        }
    }
}
