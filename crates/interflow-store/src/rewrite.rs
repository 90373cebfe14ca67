//! Rewriting the sled files into fresh ones after the migration that sealed the bodies.
//!
//! sled is log-structured: the migration to schema 3 writes the sealed bodies to new segments,
//! but the plain bodies stay in the old segments of the `db` file until sled happens to reuse
//! them. So after that migration every live key and value is copied into a new sled database
//! in `rewrite.tmp/`, made durable, and moved over the old files, which are deleted: no file
//! of the data directory then holds a plain body.
//!
//! Crash safety: the copy is complete only once `rewrite.tmp/complete` (the list of the new
//! files) exists. An open that finds `rewrite.tmp/` without it deletes the copy (the old
//! files are untouched and already migrated); with it, it finishes the move. The move goes
//! file by file from the list and never deletes a file it has not a replacement for, so it can
//! be repeated after a crash at any point.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::Result;
use crate::error::StoreError;

const TMP: &str = "rewrite.tmp";
const COMPLETE: &str = "complete";

fn io_err(path: &Path, source: io::Error) -> StoreError {
    StoreError::Rewrite {
        path: path.to_owned(),
        source,
    }
}

/// Finishes or discards a rewrite that a crash interrupted. Call before opening sled.
pub(crate) fn finish_interrupted(dir: &Path) -> Result<()> {
    let tmp = dir.join(TMP);
    if !tmp.exists() {
        return Ok(());
    }
    if tmp.join(COMPLETE).exists() {
        tracing::warn!("finishing an interrupted rewrite of the store files");
        move_in(dir, &tmp)
    } else {
        tracing::warn!("discarding an incomplete copy of the store files");
        fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))
    }
}

/// Copies every key and value of the sled database in `dir` (which must not be open) into
/// fresh files and replaces the old ones with them.
pub(crate) fn rewrite(dir: &Path) -> Result<()> {
    let tmp = dir.join(TMP);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    }
    {
        let open = |p: &Path| crate::engine::open_sled(&sled::Config::new().path(p), p);
        let old = open(dir)?;
        let new = open(&tmp)?;
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for kv in old.iter() {
            let (k, v) = kv?;
            batch.insert(k, v);
            n += 1;
            if n.is_multiple_of(4096) {
                new.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        new.apply_batch(batch)?;
        new.flush()?;
    }
    let names = sync_tree(&tmp)?;
    let complete = tmp.join(COMPLETE);
    fs::write(&complete, names.join("\n"))
        .and_then(|()| File::open(&complete)?.sync_all())
        .and_then(|()| File::open(&tmp)?.sync_all())
        .map_err(|e| io_err(&complete, e))?;
    move_in(dir, &tmp)
}

/// The names of the entries directly under `dir`, after syncing every file and directory
/// below it.
fn sync_tree(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let e = e.map_err(|e| io_err(dir, e))?;
        let p = e.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|err| io_err(&p, err))?;
        }
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))?;
    Ok(names)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `name` is one of sled's own files (not the keyring, anchor or the copy).
fn is_sled_file(name: &str) -> bool {
    matches!(name, "db" | "conf" | "blobs") || name.starts_with("snap.")
}

fn move_in(dir: &Path, tmp: &Path) -> Result<()> {
    let complete = tmp.join(COMPLETE);
    let list = fs::read_to_string(&complete).map_err(|e| io_err(&complete, e))?;
    let names: Vec<&str> = list.lines().filter(|n| !n.is_empty()).collect();
    for name in &names {
        let from = tmp.join(name);
        if from.exists() {
            let to = dir.join(name);
            remove_any(&to).map_err(|e| io_err(&to, e))?;
            fs::rename(&from, &to).map_err(|e| io_err(&from, e))?;
        }
    }
    // Old sled files the new set has no counterpart for (e.g. an older snapshot).
    let stale: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_sled_file(n) && !names.contains(&n.as_str()))
        .map(|n| dir.join(n))
        .collect();
    for p in stale {
        remove_any(&p).map_err(|e| io_err(&p, e))?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))?;
    fs::remove_dir_all(tmp).map_err(|e| io_err(tmp, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}
