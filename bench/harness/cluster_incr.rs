//! Scenario 5b: incremental apply into a 3-master cluster target against a standalone
//! target — the "≥ 70% of the rate into one standalone target". Same method as
//! the catch-up scenario: tandem streams, is SIGSTOPped, the write mix goes to the
//! source, SIGCONT starts the clock, which stops when the target's checkpoint (the
//! floor, on a cluster) reaches the source's offset. Key counts are checked after.

use std::time::{Duration, Instant};

use super::attach::{
    Kind, SOURCE_OPTS, attach, exact_user_keys, source_offset, tandem_sync_missing, wait_streaming,
};
use super::client::Client;
use super::servers::{Redis, Tandem, cpu_secs, signal, wait_until};
use super::topo::{push, start_cluster, unavailable};
use super::{Config, Res, Row, data};

/// CPU seconds used by tandem and by the target server(s) while the clock ran.
type CpuSplit = (f64, f64);

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_secs(p)).sum()
}

/// The floor checkpoint of link `id` on a cluster: (state, offset), from whichever node
/// holds it (the others answer MOVED).
fn floor(nodes: &[Redis], id: &str) -> Res<Option<(String, u64)>> {
    let key = format!("__tandem:ckpt:{id}");
    for n in nodes {
        let Ok(h) = Client::connect(n.port)?.hgetall(&key) else {
            continue;
        };
        let field = |f: &str| h.iter().find(|(k, _)| k == f).map(|(_, v)| v.clone());
        if let (Some(state), Some(off)) = (field("state"), field("offset")) {
            return Ok(Some((state, off.parse()?)));
        }
    }
    Ok(None)
}

fn to_standalone(cfg: &Config, n: u64, run: usize) -> Res<(f64, CpuSplit)> {
    let source = Redis::start(SOURCE_OPTS)?;
    let id = format!("ci{run}");
    let mut a = attach(Kind::Tandem, &cfg.tandem_bin, &source, &id)?;
    wait_streaming(&mut a, &source, &id, cfg.sizes.wait_limit)?;
    let pid = a.applier_pid();
    let target_pid = a.target.pid();
    signal(pid, "STOP")?;
    let writes = data::write_mix(source.port, n, cfg.seed + run as u64, "ci");
    let cpu0 = (cpu_of(&[pid]), cpu_of(&[target_pid]));
    let t0 = Instant::now();
    signal(pid, "CONT")?;
    writes?;
    let master = source_offset(&source)?;
    wait_until(
        "standalone target to reach the source offset",
        cfg.sizes.wait_limit,
        Duration::from_millis(2),
        || Ok(a.offset()?.is_some_and(|o| o >= master)),
    )
    .map_err(|e| a.with_log(e))?;
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let cpu = (cpu_of(&[pid]) - cpu0.0, cpu_of(&[target_pid]) - cpu0.1);
    let keys = exact_user_keys(source.port)?;
    if a.exact_user_keys()? != keys {
        return Err("standalone target: key count differs from the source".into());
    }
    Ok((rate, cpu))
}

fn to_cluster(cfg: &Config, n: u64, run: usize) -> Res<(f64, CpuSplit, Option<u64>)> {
    let source = Redis::start(SOURCE_OPTS)?;
    let nodes = start_cluster()?;
    let id = format!("cc{run}");
    let args: Vec<String> = [
        "redis",
        "sync",
        "--source",
        &source.url(),
        "--target",
        &nodes[0].url(),
        "--id",
        &id,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut t = Tandem::start(&cfg.tandem_bin, &args)?;
    let limit = cfg.sizes.wait_limit;
    let tail = |t: &Tandem,
                e: Box<dyn std::error::Error + Send + Sync>|
     -> Box<dyn std::error::Error + Send + Sync> {
        format!("{e}; tandem log: {}", t.log_tail()).into()
    };
    // Streaming: the floor says incr at the source's current offset.
    Client::connect(source.port)?.ok(&[b"SET", b"bench:ready", b"1"])?;
    let ready = source_offset(&source)?;
    wait_until(
        "cluster floor to reach incr",
        limit,
        Duration::from_millis(5),
        || {
            t.check_alive()?;
            Ok(floor(&nodes, &id)?.is_some_and(|(s, o)| s == "incr" && o >= ready))
        },
    )
    .map_err(|e| tail(&t, e))?;
    signal(t.pid(), "STOP")?;
    let writes = data::write_mix(source.port, n, cfg.seed + run as u64, "ci");
    let node_pids: Vec<u32> = nodes.iter().map(Redis::pid).collect();
    let cpu0 = (cpu_of(&[t.pid()]), cpu_of(&node_pids));
    let t0 = Instant::now();
    signal(t.pid(), "CONT")?;
    writes?;
    let master = source_offset(&source)?;
    wait_until(
        "cluster floor to reach the source offset",
        limit,
        Duration::from_millis(2),
        || {
            t.check_alive()?;
            Ok(floor(&nodes, &id)?.is_some_and(|(_, o)| o >= master))
        },
    )
    .map_err(|e| tail(&t, e))?;
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let cpu = (cpu_of(&[t.pid()]) - cpu0.0, cpu_of(&node_pids) - cpu0.1);
    let keys = exact_user_keys(source.port)?;
    let mut held = 0;
    for node in &nodes {
        held += exact_user_keys(node.port)?;
    }
    if held != keys {
        return Err(format!("cluster target holds {held} keys, source {keys}").into());
    }
    Ok((rate, cpu, t.peak_rss()))
}

pub fn cluster_incremental(cfg: &Config) -> Vec<Row> {
    let n = cfg.sizes.catchup_writes / 4;
    let mut row = Row::new(
        format!("5b. incremental apply of {n} pipelined writes: cluster (3 masters) target"),
        "writes/s",
        true,
    );
    row.baseline_label = "tandem → standalone";
    row.notes.push(
        "method: tandem streaming, SIGSTOPped, write mix sent, SIGCONT → target checkpoint \
         (cluster: the floor) == source offset"
            .into(),
    );
    if let Some(why) = tandem_sync_missing(&cfg.tandem_bin) {
        return vec![unavailable(row, why)];
    }
    for run in 0..cfg.runs {
        match to_standalone(cfg, n, run) {
            Ok((v, (t, s))) => {
                push(&mut row.baseline, v);
                row.notes.push(format!(
                    "run {run} standalone: CPU s tandem {t:.2}, target {s:.2}"
                ));
            }
            Err(e) => row.baseline = super::Outcome::Failed(e.to_string()),
        }
        match to_cluster(cfg, n, run) {
            Ok((v, (t, s), rss)) => {
                push(&mut row.tandem, v);
                row.tandem_rss.extend(rss);
                row.notes.push(format!(
                    "run {run} cluster: CPU s tandem {t:.2}, 3 masters {s:.2}"
                ));
            }
            Err(e) => row.tandem = super::Outcome::Failed(e.to_string()),
        }
    }
    vec![row]
}
