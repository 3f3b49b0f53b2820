//! The oldest writes of a side, moved to disk when the side holds too many in memory
//! (a burst far above what the other side applies: the writes keep counting until the
//! other side's stream shows them back, so their number grows with that link's lag).
//!
//! A segment is one file of writes sorted by key hash, the latest write per key only
//! (as compaction keeps them), unlinked as soon as it is created so that nothing is
//! left behind by a crash. In memory a segment keeps a Bloom filter and every 32nd
//! hash with its file offset: a write whose key is in no segment costs a few bit
//! probes per segment, a key in one a read of at most 32 records (page cache).
//!
//! Keys are not stored: a key is known by two 64-bit hashes, the store's and a fixed
//! SipHash, so two keys are taken for one only if both collide (about 2^-128 for a
//! pair; the store's own hash alone collides in tests on purpose).

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Seen, Space, Write};

/// Records per fence (the in-memory sample of hashes and offsets).
const FENCE: usize = 32;
/// Bloom filter bits per write.
const BLOOM_BITS: usize = 10;
const BLOOM_PROBES: u64 = 4;

/// A key as segments know it: the store's hash and a second one.
pub type KeyId = (u64, u64);

pub fn second_hash<K: std::hash::Hash>(key: &K) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

/// Command names, numbered for the files.
#[derive(Default)]
pub struct Names(Vec<&'static str>);

impl Names {
    fn number(&mut self, name: &'static str) -> u16 {
        match self.0.iter().position(|n| *n == name) {
            Some(i) => i as u16,
            None => {
                self.0.push(name);
                (self.0.len() - 1) as u16
            }
        }
    }

    fn name(&self, i: u16) -> &'static str {
        self.0.get(usize::from(i)).copied().unwrap_or("?")
    }
}

pub struct Segment {
    file: File,
    /// (hash, file offset) of every FENCE-th record, and the file's length last.
    fences: Vec<(u64, u64)>,
    len: u64,
    bloom: Vec<u64>,
    /// Writes in the file.
    pub writes: usize,
    /// Per space, the largest offset of a write in it; the latest observation time:
    /// the segment no longer counts once a write with these would not.
    pub newest: Vec<(Space, u64)>,
    pub newest_ms: u64,
}

impl Segment {
    /// Writes `writes` (oldest first) to a new file in `dir`, keeping the latest per key.
    pub fn create(
        dir: &Path,
        mut writes: Vec<(KeyId, Write)>,
        names: &mut Names,
    ) -> std::io::Result<Segment> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(
            "detector-{}-{}.seg",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        // Stable: among one key's writes the last stays last.
        writes.sort_by_key(|(id, _)| *id);
        let mut latest: Vec<(KeyId, Write)> = Vec::with_capacity(writes.len());
        for (id, w) in writes {
            match latest.last_mut() {
                Some(last) if last.0 == id => *last = (id, w),
                _ => latest.push((id, w)),
            }
        }
        let mut seg = Segment {
            file,
            fences: Vec::with_capacity(latest.len() / FENCE + 1),
            len: 0,
            bloom: vec![0; (latest.len() * BLOOM_BITS).div_ceil(64).max(1)],
            writes: latest.len(),
            newest: Vec::new(),
            newest_ms: 0,
        };
        let file = seg.file.try_clone()?;
        let mut out = BufWriter::new(&file);
        let mut buf = Vec::new();
        for (i, (id, w)) in latest.iter().enumerate() {
            if i % FENCE == 0 {
                seg.fences.push((id.0, seg.len));
            }
            seg.bloom_set(id.1);
            match seg.newest.iter_mut().find(|(s, _)| *s == w.space) {
                Some((_, o)) => *o = (*o).max(w.own),
                None => seg.newest.push((w.space, w.own)),
            }
            seg.newest_ms = seg.newest_ms.max(w.at_ms);
            buf.clear();
            encode(&mut buf, *id, w, names);
            out.write_all(&buf)?;
            seg.len += buf.len() as u64;
        }
        out.flush()?;
        drop(out);
        Ok(seg)
    }

    fn bloom_bits(&self, h: u64) -> impl Iterator<Item = usize> + '_ {
        let m = (self.bloom.len() * 64) as u64;
        let step = h.rotate_left(32) | 1;
        (0..BLOOM_PROBES).map(move |i| (h.wrapping_add(i.wrapping_mul(step)) % m) as usize)
    }

    fn bloom_set(&mut self, h: u64) {
        let bits: Vec<usize> = self.bloom_bits(h).collect();
        for b in bits {
            self.bloom[b / 64] |= 1 << (b % 64);
        }
    }

    /// The write of `id` in this segment.
    pub fn get(&self, id: KeyId, names: &Names) -> std::io::Result<Option<Write>> {
        if !self
            .bloom_bits(id.1)
            .all(|b| self.bloom[b / 64] & (1 << (b % 64)) != 0)
        {
            return Ok(None);
        }
        // Records of one hash may begin before the first fence that has it.
        let i = self.fences.partition_point(|(h, _)| *h < id.0);
        let from = self.fences[i.saturating_sub(1)].1;
        let mut at = from;
        let mut buf = vec![0u8; 4096];
        let (mut have, mut pos) = (0usize, 0usize);
        loop {
            // The bytes the record at `pos` needs: its header, then all of it.
            let need = if pos + HEAD > have {
                HEAD
            } else {
                HEAD + usize::from(u16_at(&buf[pos..have], 38)) * 12
            };
            if pos + need > have {
                if at >= self.len {
                    return Ok(None);
                }
                buf.copy_within(pos..have, 0);
                have -= pos;
                pos = 0;
                if need > buf.len() {
                    buf.resize(need, 0);
                }
                let n = ((self.len - at) as usize).min(buf.len() - have);
                self.file.read_exact_at(&mut buf[have..have + n], at)?;
                have += n;
                at += n as u64;
                continue;
            }
            let r = &buf[pos..pos + need];
            let (h1, h2) = (u64_at(r, 0), u64_at(r, 8));
            if h1 > id.0 {
                return Ok(None);
            }
            if (h1, h2) == id {
                return Ok(Some(decode(r, names)));
            }
            pos += need;
        }
    }
}

/// h1, h2 (8 + 8), space (4), own (8), at_ms (8), command (2), seen pairs (2); then
/// the pairs, (space, offset) 12 bytes each.
const HEAD: usize = 40;

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn encode(out: &mut Vec<u8>, id: KeyId, w: &Write, names: &mut Names) {
    out.extend_from_slice(&id.0.to_le_bytes());
    out.extend_from_slice(&id.1.to_le_bytes());
    out.extend_from_slice(&w.space.to_le_bytes());
    out.extend_from_slice(&w.own.to_le_bytes());
    out.extend_from_slice(&w.at_ms.to_le_bytes());
    out.extend_from_slice(&names.number(w.command).to_le_bytes());
    let pairs: Vec<(Space, u64)> = w.seen_other.iter().collect();
    out.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    for (s, o) in pairs {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&o.to_le_bytes());
    }
}

fn decode(r: &[u8], names: &Names) -> Write {
    let n = usize::from(u16_at(r, 38));
    let pairs = (0..n)
        .map(|i| {
            let at = HEAD + i * 12;
            let s = u32::from_le_bytes(r[at..at + 4].try_into().expect("4 bytes"));
            (s, u64_at(r, at + 4))
        })
        .collect();
    Write {
        space: u32::from_le_bytes(r[16..20].try_into().expect("4 bytes")),
        own: u64_at(r, 20),
        seen_other: Seen(Arc::new(pairs)),
        at_ms: u64_at(r, 28),
        command: names.name(u16_at(r, 36)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(i: u64) -> Write {
        Write {
            space: (i % 3) as Space,
            own: i * 7,
            seen_other: Seen(Arc::new((0..i % 4).map(|s| (s as Space, i + s)).collect())),
            at_ms: 1_700_000_000_000 + i,
            command: ["SET", "INCR", "HSET"][(i % 3) as usize],
        }
    }

    /// Many records (fences, buffer refills), runs of one store hash across fences,
    /// several writes of one key (the latest kept): every key found exactly, others not.
    #[test]
    fn every_write_comes_back_from_a_large_segment() {
        let dir = std::env::temp_dir().join("tandem-spill-test");
        let mut names = Names::default();
        let id = |i: u64| ((i / 100) * 1_000_003 % 997, second_hash(&i));
        let mut writes: Vec<(KeyId, Write)> = (0..20_000).map(|i| (id(i), w(i))).collect();
        // A second write of every tenth key, later: it is the one kept.
        writes.extend((0..20_000).step_by(10).map(|i| (id(i), w(i + 1_000_000))));
        let seg = Segment::create(&dir, writes, &mut names).unwrap();
        assert_eq!(seg.writes, 20_000);
        for i in 0..20_000u64 {
            let want = if i % 10 == 0 { w(i + 1_000_000) } else { w(i) };
            assert_eq!(seg.get(id(i), &names).unwrap(), Some(want), "key {i}");
        }
        for i in 20_000..21_000u64 {
            assert_eq!(seg.get(id(i), &names).unwrap(), None);
            assert_eq!(seg.get((id(i).0 + 5000, id(i).1), &names).unwrap(), None);
        }
        assert_eq!(seg.newest_ms, w(1_019_990).at_ms);
        // Nothing left in the directory: the file was unlinked at once.
        let left = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref().is_ok_and(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("detector-{}-", std::process::id()))
                })
            })
            .count();
        assert_eq!(left, 0);
    }
}
