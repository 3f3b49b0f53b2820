//! Two-way against one-way, one direction loaded: the same catch-up of changes written
//! on the source, applied once by `tandem mongo sync` (one applier, as each two-way
//! direction has) and once by `tandem mongo twoway` between the same two servers (its
//! B→A direction reads B's stream and drops the echoes of A→B's batches). The ceiling
//! target gets the same changes too, untimed, so the end-state check still holds.

use std::time::Duration;

use mongodb::Client;
use mongodb::bson::{Document, doc};

use super::data::Change;
use super::phases::{
    Fetch, LINK, Measured, Rig, ceiling_apply, cpu_note, has_marker, insert_marker, place_link,
    write_changes,
};
use super::tandem::Tandem;
use super::util::{Ctx, Result};

/// One-way rate (the row's ceiling) and two-way rate of the same catch-up size.
pub async fn compare(rig: &Rig, oneway: &[Change], twoway: &[Change]) -> Result<Measured> {
    let id = format!("{LINK}-oneway1");
    let args = [
        "--mode",
        "incr",
        "--fetch",
        "change-stream",
        "--workers",
        "1",
        "--id",
        &id,
    ];
    place_link(rig, &args, &id, Fetch::ChangeStream).await?;
    write_changes(&rig.src, oneway).await?;
    insert_marker(&rig.src, "after-oneway1").await?;
    let limit = Duration::from_secs(120) + Duration::from_millis(2 * oneway.len() as u64);
    let mut t = rig.tandem(&args, "apply-oneway1.log")?;
    let tgt = &rig.tgt;
    let one = t
        .wait_until("the one-way marker", limit, || {
            has_marker(tgt, "after-oneway1")
        })
        .await?;
    t.stop(Duration::from_secs(60)).await?;
    ceiling_apply(&rig.ceil, oneway).await?;

    let tw = format!("{LINK}-tw");
    let tw_args: Vec<String> = [
        "--a",
        &rig.source.uri,
        "--b",
        &rig.target.uri,
        "--full-sync",
        "none",
        "--id",
        &tw,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Placed at "now" both ways, then stopped: the timed run resumes there.
    let mut p = Tandem::spawn_cmd(&rig.bin, "twoway", &tw_args, rig.logs.join("place-tw.log"))?;
    let (src, a2b, b2a) = (&rig.src, format!("{tw}:a2b"), format!("{tw}:b2a"));
    p.wait_until(
        "both two-way checkpoints",
        Duration::from_secs(60),
        || async { Ok(has_ckpt(tgt, &a2b).await? && has_ckpt(src, &b2a).await?) },
    )
    .await?;
    p.stop(Duration::from_secs(60)).await?;
    write_changes(&rig.src, twoway).await?;
    insert_marker(&rig.src, "after-twoway").await?;
    let c0 = rig.server_cpu();
    let mut t = Tandem::spawn_cmd(&rig.bin, "twoway", &tw_args, rig.logs.join("apply-tw.log"))?;
    let two = t
        .wait_until("the two-way marker", limit, || {
            has_marker(tgt, "after-twoway")
        })
        .await?;
    let c1 = rig.server_cpu();
    let usage = t.usage();
    t.stop(Duration::from_secs(60)).await?;
    ceiling_apply(&rig.ceil, twoway).await?;
    let n = twoway.len() as f64;
    Ok(Measured {
        ceiling: oneway.len() as f64 / one.as_secs_f64(),
        tandem: n / two.as_secs_f64(),
        cpu_ms_per_10k: usage.cpu.as_secs_f64() * 1000.0 * 10_000.0 / n,
        peak_rss_mb: usage.peak_rss_kb as f64 / 1024.0,
        note: format!(
            "one-way (one applier) {:.1} s, two-way {:.1} s for {} changes each; {}",
            one.as_secs_f64(),
            two.as_secs_f64(),
            twoway.len(),
            cpu_note("two-way", c0, c1, two, &[0, 2])
        ),
    })
}

async fn has_ckpt(c: &Client, id: &str) -> Result<bool> {
    Ok(c.database("__tandem")
        .collection::<Document>("checkpoints")
        .find_one(doc! {"_id": id})
        .await
        .ctx("reading a checkpoint")?
        .is_some())
}
