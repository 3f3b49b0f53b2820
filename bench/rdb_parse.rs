//! RDB parse throughput: tandem vs the `rdb` crate on the same file.
//!
//! `cargo bench --bench rdb_parse` generates (once, cached under target/rdb-bench/) an
//! RDB of mixed types written by the real `redis-server` (strings incl. ints and big
//! values, hashes/lists/sets/zsets in small and large encodings, streams with groups,
//! two big keys), of about `TANDEM_BENCH_MB` MB (default 200; 1024 is the full mode),
//! or uses the file in `TANDEM_BENCH_RDB`. Each parser runs in a child process so its
//! peak RSS (VmHWM from /proc/self/status) is its own. Modes:
//! - `tandem-decode`: every value decoded into chunks (what command rewrite does), every
//!   element's bytes and score visited;
//! - `tandem-commands`: decoded and turned into commands;
//! - `tandem-raw`: every value taken as raw bytes (what RESTORE does);
//! - `rdb-crate`: `rdb::parse` with the Nil formatter (rdb 0.3 panics on streams: use
//!   `TANDEM_BENCH_STREAMS=0` for a file both can read).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tandem::redis::rdb::*;

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn word_between(&mut self, base: usize, spread: u64) -> String {
        let n = base + (self.next() % spread) as usize;
        self.word(n)
    }
    fn word(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b'a' + (self.next() % 26) as u8) as char)
            .collect()
    }
}

fn resp(w: &mut impl Write, args: &[String]) -> usize {
    let mut n = 0;
    let mut put = |s: &[u8]| {
        w.write_all(s).unwrap();
        n += s.len();
    };
    put(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        put(format!("${}\r\n", a.len()).as_bytes());
        put(a.as_bytes());
        put(b"\r\n");
    }
    n
}

fn generate(path: &Path, mb: u64, streams: bool) {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let cmds = dir.join("gen.resp");
    let mut w = BufWriter::new(File::create(&cmds).unwrap());
    let mut r = Rng(0x1234_5678_9abc_def1);
    let target = mb << 20;
    let mut written = 0u64;
    let mut i = 0u64;
    let s = |x: u64| x.to_string();
    while written < target {
        i += 1;
        let k = format!("key:{i}");
        let pick = if streams { i % 20 } else { i % 18 };
        let mut a: Vec<String> = match pick {
            0..=6 => vec!["SET".into(), k, r.word_between(50, 1500)],
            7 => vec!["SET".into(), k, s(r.next() >> 20)],
            8..=9 => {
                let mut v = vec!["HSET".into(), k];
                let n = if i % 40 == 8 { 300 } else { 10 };
                for j in 0..n {
                    v.push(format!("field{j}"));
                    v.push(r.word_between(5, 40));
                }
                v
            }
            10..=12 => {
                let mut v = vec!["RPUSH".into(), k];
                for _ in 0..(20 + r.next() % 300) {
                    v.push(r.word_between(3, 20));
                }
                v
            }
            13..=14 => {
                let mut v = vec!["SADD".into(), k];
                let ints = i.is_multiple_of(2);
                for _ in 0..(10 + r.next() % 200) {
                    v.push(if ints {
                        s(r.next() % 100_000)
                    } else {
                        r.word(8)
                    });
                }
                v
            }
            15..=17 => {
                let mut v = vec!["ZADD".into(), k];
                for _ in 0..(10 + r.next() % 250) {
                    v.push(format!("{}", (r.next() % 1_000_000) as f64 / 7.0));
                    v.push(r.word(10));
                }
                v
            }
            _ => {
                let mut n = 0;
                for j in 0..100 {
                    n += resp(
                        &mut w,
                        &[
                            "XADD".into(),
                            k.clone(),
                            format!("{}-{}", 1_700_000_000_000u64 + j, j % 3),
                            "f".into(),
                            r.word(20),
                            "n".into(),
                            s(j),
                        ],
                    );
                }
                n += resp(
                    &mut w,
                    &[
                        "XGROUP".into(),
                        "CREATE".into(),
                        k.clone(),
                        "g".into(),
                        "0".into(),
                    ],
                );
                vec![
                    "XREADGROUP".into(),
                    "GROUP".into(),
                    "g".into(),
                    "c".into(),
                    "COUNT".into(),
                    "10".into(),
                    "STREAMS".into(),
                    {
                        written += n as u64;
                        k
                    },
                    ">".into(),
                ]
            }
        };
        if i.is_multiple_of(5) {
            let key = a[1].clone();
            written += resp(&mut w, &a) as u64;
            // 2100-01-01: far enough ahead that the keys never expire before the SAVE.
            a = vec!["PEXPIREAT".into(), key, s(4_102_444_800_000 + i)];
        }
        written += resp(&mut w, &a) as u64;
    }
    // Two big keys (chunked decode path).
    for b in 0..200u64 {
        let mut z = vec!["ZADD".to_string(), "big:zset".into()];
        let mut l = vec!["RPUSH".to_string(), "big:list".into()];
        for j in 0..5000u64 {
            z.push(s(b * 5000 + j));
            z.push(format!("member-{}", b * 5000 + j));
            l.push(format!("element-{}", b * 5000 + j));
        }
        resp(&mut w, &z);
        resp(&mut w, &l);
    }
    w.flush().unwrap();
    drop(w);
    let port = 20000 + (std::process::id() % 20000) as u16;
    let mut server =
        Command::new(std::env::var("TANDEM_REDIS_SERVER").unwrap_or("redis-server".into()))
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let st = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--pipe"])
        .stdin(File::open(&cmds).unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "redis-cli --pipe failed");
    let st = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "SAVE"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let _ = server.kill();
    let _ = server.wait();
    std::fs::rename(dir.join("dump.rdb"), path).unwrap();
    let _ = std::fs::remove_file(cmds);
}

/// Visit every element of a chunk (its bytes and scores), so `tandem-decode` provably
/// yields each element, as the `rdb` crate hands each one to its formatter.
fn touch(c: &ValueChunk) -> u64 {
    let sum = |e: &Elements| e.iter().map(|x| x.len() as u64).sum::<u64>();
    match c {
        ValueChunk::String(v) | ValueChunk::StringAppend(v) => v.len() as u64,
        ValueChunk::List(e) | ValueChunk::Set(e) => sum(e),
        ValueChunk::Zset { members, scores } => {
            sum(members) + scores.iter().map(|s| s.to_bits() & 1).sum::<u64>()
        }
        ValueChunk::Hash { fields, values, .. } => sum(fields) + sum(values),
        _ => 1,
    }
}

fn run_mode(mode: &str, path: &Path) -> (u64, u64) {
    let f = BufReader::with_capacity(1 << 16, File::open(path).unwrap());
    let mut keys = 0u64;
    match mode {
        "rdb-crate" => {
            rdb::parse(
                f,
                rdb::formatter::Nil::new(None),
                rdb::filter::Simple::new(),
            )
            .expect("rdb crate parse");
        }
        _ => {
            let mut p = RdbParser::new(f).unwrap();
            let mut items = 0u64;
            while let Some(ev) = p.next_event().unwrap() {
                let Event::Key(k) = ev else { continue };
                keys += 1;
                match mode {
                    "tandem-raw" => match p.read_raw(64 << 20).unwrap() {
                        RawValue::Complete(r) => items += r.len() as u64,
                        RawValue::TooLarge => while p.next_chunk().unwrap().is_some() {},
                    },
                    "tandem-commands" => {
                        let mut kc = KeyCommands::new(&k, CommandOptions::default());
                        while let Some(b) = kc.next_batch(&mut p).unwrap() {
                            items += b.len() as u64;
                        }
                    }
                    _ => {
                        while let Some(c) = p.next_chunk().unwrap() {
                            items += std::hint::black_box(touch(&c));
                        }
                    }
                }
            }
            std::hint::black_box(items);
        }
    }
    (keys, vm_hwm_kb())
}

fn main() {
    if let (Ok(mode), Ok(path)) = (
        std::env::var("TANDEM_BENCH_MODE"),
        std::env::var("TANDEM_BENCH_FILE"),
    ) {
        let t = Instant::now();
        let (keys, hwm) = run_mode(&mode, Path::new(&path));
        println!("{} {} {}", t.elapsed().as_secs_f64(), keys, hwm);
        return;
    }
    let path = match std::env::var("TANDEM_BENCH_RDB") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let mb: u64 = std::env::var("TANDEM_BENCH_MB")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            // The rdb crate panics (todo!) on streams: TANDEM_BENCH_STREAMS=0 leaves them
            // out so both parsers read the same file.
            let streams = std::env::var("TANDEM_BENCH_STREAMS")
                .map(|v| v != "0")
                .unwrap_or(true);
            let tag = if streams { "" } else { "-nostreams" };
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("target/rdb-bench/mixed-{mb}mb{tag}.rdb"));
            if !p.exists() {
                eprintln!("generating {} with redis-server…", p.display());
                generate(&p, mb, streams);
            }
            p
        }
    };
    let size = std::fs::metadata(&path).unwrap().len();
    println!("file: {} ({:.1} MB)", path.display(), size as f64 / 1e6);
    let modes: Vec<String> = std::env::var("TANDEM_BENCH_MODES")
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or_else(|_| {
            [
                "tandem-decode",
                "tandem-commands",
                "tandem-raw",
                "rdb-crate",
            ]
            .map(String::from)
            .to_vec()
        });
    for mode in modes {
        // Warm the page cache once, then time a fresh child process.
        let _ = std::fs::read(&path).map(|d| d.len());
        let out = Command::new(std::env::current_exe().unwrap())
            .env("TANDEM_BENCH_MODE", &mode)
            .env("TANDEM_BENCH_FILE", &path)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let parts: Vec<&str> = text.split_whitespace().collect();
        if !out.status.success() || parts.len() != 3 {
            let err = String::from_utf8_lossy(&out.stderr);
            println!(
                "{mode:<16} FAILED: {}",
                err.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
            );
            continue;
        }
        let secs: f64 = parts[0].parse().unwrap();
        println!(
            "{mode:<16} {:>8.1} MB/s  {:>7.2} s  keys {:>8}  peak RSS {:>6.1} MB",
            size as f64 / 1e6 / secs,
            secs,
            parts[1],
            parts[2].parse::<f64>().unwrap() / 1024.0
        );
    }
}
