//! What a link has committed into Kafka: the source position and, while the full copy
//! runs, how far it got. One JSON record per link (key `--id`) in the compacted
//! position topic, written inside the same transaction as the messages it covers, so a
//! `read_committed` read of the topic says exactly what the topics hold.

use bson::Bson;
use serde_json::{Value, json};

use crate::core::{MongoPosition, OpTime};
use crate::mongo::error::{MongoError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// During the copy: where the changes made meanwhile begin. Afterwards: the last
    /// source unit whose messages are committed.
    pub pos: MongoPosition,
    /// `Some` while the full copy is unfinished.
    pub copy: Option<CopyProgress>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CopyProgress {
    /// Namespaces copied completely.
    pub done: Vec<String>,
    /// The namespace being copied and the last `_id` committed of it (documents are
    /// copied in `_id` order, so everything up to it is in Kafka).
    pub current: Option<(String, Bson)>,
}

impl State {
    pub fn to_json(&self) -> Vec<u8> {
        let token = self.pos.token.as_ref().map(|t| hex(t));
        let copy = self.copy.as_ref().map(|c| {
            json!({
                "done": c.done,
                "ns": c.current.as_ref().map(|(ns, _)| ns),
                "after": c.current.as_ref().map(|(_, id)| id.clone().into_canonical_extjson()),
            })
        });
        let v = json!({
            "v": 1,
            "history": self.pos.history,
            "ts": self.pos.ts.0,
            "at": self.pos.ts.to_string(),
            "token": token,
            "copy": copy,
        });
        v.to_string().into_bytes()
    }

    pub fn parse(what: &str, bytes: &[u8]) -> Result<State> {
        let bad = |why: String| MongoError::fatal(what, format!("unreadable position: {why}"));
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if v["v"] != 1 {
            return Err(bad(format!("unknown version {}", v["v"])));
        }
        let history = v["history"]
            .as_str()
            .ok_or_else(|| bad("no history".into()))?;
        let ts = OpTime(v["ts"].as_u64().ok_or_else(|| bad("no ts".into()))?);
        let token = match &v["token"] {
            Value::Null => None,
            Value::String(s) => Some(unhex(s).ok_or_else(|| bad("token is not hex".into()))?),
            _ => return Err(bad("token".into())),
        };
        let copy = match &v["copy"] {
            Value::Null => None,
            c => {
                let done = c["done"]
                    .as_array()
                    .ok_or_else(|| bad("copy.done".into()))?
                    .iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect();
                let current = match (&c["ns"], &c["after"]) {
                    (Value::String(ns), after) if !after.is_null() => {
                        let id = Bson::try_from(after.clone())
                            .map_err(|e| bad(format!("copy.after: {e}")))?;
                        Some((ns.clone(), id))
                    }
                    _ => None,
                };
                Some(CopyProgress { done, current })
            }
        };
        Ok(State {
            pos: MongoPosition {
                history: history.to_string(),
                ts,
                token,
            },
            copy,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;

    #[test]
    fn round_trips_every_shape() {
        let oid = ObjectId::new();
        for (pos, copy) in [
            (MongoPosition::oplog("rs0", OpTime::new(5, 1)), None),
            (
                MongoPosition::stream("rs0", OpTime::new(9, 2), vec![0, 1, 0xff]),
                Some(CopyProgress::default()),
            ),
            (
                MongoPosition::stream("mongos", OpTime::new(9, 2), vec![]),
                Some(CopyProgress {
                    done: vec!["a.b".into(), "a.c".into()],
                    current: Some(("a.d".into(), Bson::ObjectId(oid))),
                }),
            ),
            (
                MongoPosition::oplog("rs0", OpTime::new(1, 1)),
                Some(CopyProgress {
                    done: vec![],
                    current: Some(("x.y".into(), Bson::Int64(1 << 40))),
                }),
            ),
        ] {
            let s = State { pos, copy };
            assert_eq!(State::parse("t", &s.to_json()).unwrap(), s);
        }
    }

    #[test]
    fn refuses_garbage() {
        assert!(State::parse("t", b"{").is_err());
        assert!(State::parse("t", br#"{"v":2}"#).is_err());
        assert!(State::parse("t", br#"{"v":1,"history":"a","ts":1,"token":"zz"}"#).is_err());
    }
}
