//! The translation rules, one per command a newer server propagates. Each is called only
//! when the target lacks what the command needs (see `TargetCaps::needs_watch`).

use bytes::Bytes;

use super::{TargetCaps, Translated};
use crate::redis::command::{self, CommandSpec};

/// A command the target cannot apply and that has no exact equivalent there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command} of key {key:?}: the target ({target}) {reason}")]
pub struct Untranslatable {
    pub command: String,
    /// The command's first key, lossily printed and cut short.
    pub key: String,
    pub target: String,
    pub reason: String,
}

const STREAM_MODES: [&str; 3] = ["KEEPREF", "DELREF", "ACKED"];
const NEW_BITOPS: [&str; 4] = ["DIFF", "DIFF1", "ANDOR", "ONE"];

fn is(a: &[u8], word: &str) -> bool {
    a.eq_ignore_ascii_case(word.as_bytes())
}

fn one_of<'a>(a: &[u8], words: &[&'a str]) -> Option<&'a str> {
    words.iter().copied().find(|w| is(a, w))
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn key_of(spec: &'static CommandSpec, argv: &[Bytes]) -> String {
    let key = command::key_indexes(spec, argv)
        .ok()
        .and_then(|k| k.first().copied())
        .and_then(|i| argv.get(i));
    match key {
        Some(k) => String::from_utf8_lossy(&k[..k.len().min(200)]).into_owned(),
        None => "?".into(),
    }
}

/// `IDS numids id…` (or `FIELDS numfields …`) at `argv[at]`: the items after the count,
/// which must be `count × per` of them and end the command.
fn counted<'a>(argv: &'a [Bytes], at: usize, word: &str, per: usize) -> Option<&'a [Bytes]> {
    if !is(argv.get(at)?, word) {
        return None;
    }
    let n: usize = std::str::from_utf8(argv.get(at + 1)?).ok()?.parse().ok()?;
    let items = argv.get(at + 2..)?;
    (n > 0 && items.len() == n.checked_mul(per)?).then_some(items)
}

pub(super) fn translate(
    caps: &TargetCaps,
    spec: &'static CommandSpec,
    argv: Vec<Bytes>,
) -> Result<Translated, Untranslatable> {
    let refuse = |reason: String| Untranslatable {
        command: spec.name.to_string(),
        key: key_of(spec, &argv),
        target: caps.label().to_string(),
        reason,
    };
    let container = spec.name.split(' ').next().unwrap_or(spec.name);
    let no_field_ttls = || refuse("has no hash field TTLs (Redis 7.4+, Valkey 9+)".into());
    // `EXBZPOPMIN key` is what the source did when it served the pop from `key`: one
    // member popped, which EXZPOPMIN does without blocking.
    if matches!(spec.name, "EXBZPOPMIN" | "EXBZPOPMAX") && argv.len() == 2 {
        let pop = if spec.name == "EXBZPOPMIN" {
            "EXZPOPMIN"
        } else {
            "EXZPOPMAX"
        };
        if !caps.has(pop) {
            return Err(refuse(format!("has no {pop} command (TairZset)")));
        }
        return Ok(Translated::Same(vec![b(pop), argv[1].clone()]));
    }
    if !caps.has(container) {
        return match spec.name {
            "HSETEX" => hsetex(caps, &argv).map_err(|r| r.map_or_else(&no_field_ttls, &refuse)),
            "HGETDEL" => match counted(&argv, 2, "FIELDS", 1) {
                Some(fields) => {
                    let mut del = vec![b("HDEL"), argv[1].clone()];
                    del.extend_from_slice(fields);
                    Ok(Translated::Into(vec![del]))
                }
                None => Err(refuse("cannot read it: malformed".into())),
            },
            // No field can hold a TTL there: removing one changes nothing.
            "HPERSIST" if !caps.field_ttls() => Ok(Translated::Into(Vec::new())),
            "HEXPIRE" | "HPEXPIRE" | "HEXPIREAT" | "HPEXPIREAT" | "HGETEX" => Err(no_field_ttls()),
            "XACKDEL" | "XDELEX" => stream_delete(spec.name, &argv).map_err(&refuse),
            _ => Err(refuse(format!("has no {container} command"))),
        };
    }
    match spec.name {
        // `PEXPIREAT key ms NX`: the condition held on the source (see the module doc).
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" if argv.len() == 4 => {
            let mut argv = argv;
            argv.truncate(3);
            Ok(Translated::Same(argv))
        }
        "XGROUP CREATE" | "XGROUP SETID" => {
            Ok(Translated::Same(drop_option(argv, 5, "ENTRIESREAD", 1)))
        }
        // `XSETID key id [ENTRIESADDED n] [MAXDELETEDID id]`: counters the target lacks.
        "XSETID" => {
            let mut argv = argv;
            argv.truncate(3);
            Ok(Translated::Same(argv))
        }
        "XADD" | "XTRIM" => match stream_trim(spec.name, &argv) {
            Ok(None) => Ok(Translated::Same(argv)),
            Ok(Some(at)) => {
                let mut argv = argv;
                argv.remove(at);
                Ok(Translated::Same(argv))
            }
            Err(reason) => Err(refuse(reason)),
        },
        "SET" => Ok(Translated::Same(drop_option(argv, 3, "IFEQ", 1))),
        "BITOP" => match argv.get(1).and_then(|op| one_of(op, &NEW_BITOPS)) {
            Some(op) => Err(refuse(format!("has no BITOP {op} (Redis 8.2+)"))),
            None => Ok(Translated::Same(argv)),
        },
        "HSETEX" => hsetex(caps, &argv).map_err(|r| r.map_or_else(&no_field_ttls, &refuse)),
        "HGETEX" => Err(no_field_ttls()),

        _ => Ok(Translated::Same(argv)),
    }
}

/// `argv` without `word` and the `values` arguments after it, looked for from `from`.
fn drop_option(mut argv: Vec<Bytes>, from: usize, word: &str, values: usize) -> Vec<Bytes> {
    if let Some(i) = argv.iter().skip(from).position(|a| is(a, word)) {
        let i = i + from;
        let end = (i + 1 + values).min(argv.len());
        argv.drain(i..end);
    }
    argv
}

/// `HSETEX key [FNX|FXX|NX|XX] [EX|PX|EXAT|PXAT n | KEEPTTL] FIELDS n field value…`.
/// `Err(None)`: a field TTL the target cannot hold.
fn hsetex(caps: &TargetCaps, argv: &[Bytes]) -> Result<Translated, Option<String>> {
    let malformed = || Some("cannot read it: malformed".to_string());
    let mut i = 2;
    let (mut ttl, mut keep) = (None, false);
    while i < argv.len() && !is(&argv[i], "FIELDS") {
        let a = &argv[i];
        if one_of(a, &["FNX", "FXX", "NX", "XX"]).is_some() {
            i += 1;
        } else if is(a, "KEEPTTL") {
            keep = true;
            i += 1;
        } else if let Some(unit) = one_of(a, &["EX", "PX", "EXAT", "PXAT"]) {
            ttl = Some((unit, argv.get(i + 1).ok_or_else(malformed)?.clone()));
            i += 2;
        } else {
            return Err(malformed());
        }
    }
    let pairs = counted(argv, i, "FIELDS", 2).ok_or_else(malformed)?;
    let fields: Vec<Bytes> = pairs.iter().step_by(2).cloned().collect();
    let mut hset = vec![b("HSET"), argv[1].clone()];
    hset.extend_from_slice(pairs);
    let with_fields = |cmd: Vec<Bytes>| {
        let mut c = cmd;
        c.push(b("FIELDS"));
        c.push(Bytes::from(fields.len().to_string()));
        c.extend(fields.iter().cloned());
        c
    };
    let key = argv[1].clone();
    match (ttl, caps.field_ttls()) {
        // No field can hold a TTL there, so keeping or clearing one is the same HSET.
        (None, false) => Ok(Translated::Into(vec![hset])),
        (Some(_), false) => Err(None),
        (None, true) if keep => Err(Some(
            "has field TTLs but no HSETEX: no command sets a field keeping its TTL".into(),
        )),
        (None, true) => Ok(Translated::Into(vec![
            hset,
            with_fields(vec![b("HPERSIST"), key]),
        ])),
        (Some((unit @ ("PXAT" | "EXAT"), at)), true) => {
            let cmd = if unit == "PXAT" {
                "HPEXPIREAT"
            } else {
                "HEXPIREAT"
            };
            Ok(Translated::Into(vec![
                hset,
                with_fields(vec![b(cmd), key, at]),
            ]))
        }
        (Some((unit, _)), true) => Err(Some(format!(
            "has no HSETEX, and a relative field TTL ({unit}) cannot be set at the source's time"
        ))),
    }
}

/// `XACKDEL key group [mode] IDS n id…` → `XACK` + `XDEL`, and `XDELEX key [mode] IDS n
/// id…` → `XDEL`, when the mode is `KEEPREF` (what XDEL does: other groups keep their
/// references).
fn stream_delete(name: &str, argv: &[Bytes]) -> Result<Translated, String> {
    let mut i = if name == "XACKDEL" { 3 } else { 2 };
    let mut mode = "KEEPREF";
    if let Some(m) = argv.get(i).and_then(|a| one_of(a, &STREAM_MODES)) {
        mode = m;
        i += 1;
    }
    let ids = counted(argv, i, "IDS", 1).ok_or("cannot read it: malformed")?;
    if mode != "KEEPREF" {
        return Err(format!(
            "has no {mode} stream deletion (Redis 8.2+): no command there removes the \
             entries' references from every consumer group exactly"
        ));
    }
    let mut del = vec![b("XDEL"), argv[1].clone()];
    del.extend_from_slice(ids);
    if name == "XDELEX" {
        return Ok(Translated::Into(vec![del]));
    }
    let mut ack = vec![b("XACK"), argv[1].clone(), argv[2].clone()];
    ack.extend_from_slice(ids);
    Ok(Translated::Into(vec![ack, del]))
}

/// `XADD`/`XTRIM` with `KEEPREF|DELREF|ACKED` (Redis 8.2+): `KEEPREF` is how older
/// servers trim, so it is dropped; the others change what a trim deletes. `Ok(Some(i))`:
/// drop `argv[i]`.
fn stream_trim(name: &str, argv: &[Bytes]) -> Result<Option<usize>, String> {
    // Options are read in order up to XADD's entry id, so a field named "ACKED" is
    // never taken for one.
    let mut i = 2;
    let (mut mode, mut trims) = (None, name == "XTRIM");
    while let Some(a) = argv.get(i) {
        if let Some(m) = one_of(a, &STREAM_MODES) {
            mode = Some((i, m));
            i += 1;
        } else if one_of(a, &["MAXLEN", "MINID"]).is_some() {
            trims = true;
            i += 1;
            if argv.get(i).is_some_and(|a| is(a, "=") || is(a, "~")) {
                i += 1;
            }
            i += 1;
        } else if is(a, "LIMIT") {
            i += 2;
        } else if is(a, "NOMKSTREAM") {
            i += 1;
        } else {
            break;
        }
    }
    match mode {
        None => Ok(None),
        Some((at, m)) if m == "KEEPREF" || !trims => Ok(Some(at)),
        Some((_, m)) => Err(format!(
            "has no {m} stream trimming (Redis 8.2+): which entries it deletes depends on \
             consumer groups, and no command there does the same"
        )),
    }
}
