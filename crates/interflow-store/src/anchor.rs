//! The heads anchor: a small file beside the sled files that records, at most once a second
//! and on close, the durable head of every channel. sled recovers a damaged log by dropping
//! everything from the damaged entry on, which would otherwise look like a clean, older store.
//! An anchor ahead of what the store holds after open means records that were durable are
//! gone: the store opens read-only and says so. The anchor is written only from heads already
//! on stable storage, so a crash or power loss never leaves it ahead of the data.
//!
//! Restoring a whole data directory from a backup restores its anchor with it. To accept an
//! older state on purpose (sled files restored alone), remove `heads.anchor`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::engine::DurableHeads;
use crate::error::{Place, ReadOnlyReason, undecodable};
use crate::{Result, keys};

pub(crate) const FILE: &str = "heads.anchor";
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// Writes the anchor atomically: temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write(dir: &Path, heads: &DurableHeads) -> std::io::Result<()> {
    let map: BTreeMap<String, u64> = heads
        .iter()
        .map(|(c, (seq, _))| (hex::encode(keys::channel_bytes(*c)), *seq))
        .collect();
    let text = serde_json::to_vec(&map).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Compares the store's heads after open with the anchor; `Some(reason)` when it lost records.
pub(crate) fn check(dir: &Path, heads: &DurableHeads) -> Result<Option<ReadOnlyReason>> {
    let path = dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(undecodable(Place::Anchor(path), "cannot be read", e)),
    };
    let anchored: BTreeMap<String, u64> = serde_json::from_slice(&text).map_err(|e| {
        undecodable(
            Place::Anchor(path.clone()),
            "is not a heads anchor; remove it to accept the store as it is",
            e,
        )
    })?;
    for (channel_hex, seq) in anchored {
        let channel = hex::decode(&channel_hex)
            .ok()
            .and_then(|b| keys::parse_channel(&b));
        let Some(channel) = channel else {
            continue;
        };
        let held = heads.get(&channel).map_or(0, |(s, _)| *s);
        if held < seq {
            return Ok(Some(ReadOnlyReason::LostRecords {
                channel,
                held,
                anchored: seq,
                anchor: path,
            }));
        }
    }
    Ok(None)
}
