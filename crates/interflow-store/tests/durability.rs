//! Durability tests with real processes: SIGKILL at random moments never loses an
//! acknowledged record, and an fsync of the data file precedes every acknowledgement.
//!
//! The child side is this same test binary re-run with `CHILD_DIR` set: the test
//! `child_process_entry` then appends batches and prints one line per acknowledged record.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use interflow_core::fixtures;
use interflow_core::payload::ContraceptionMethod;
use interflow_core::record::NewRecord;
use interflow_core::record::{ChannelId, RecordId};
use interflow_store::{AppendOutcome, OutboundGroup, Store, StoreOptions};

const CHILD_DIR: &str = "INTERFLOW_TEST_CHILD_DIR";
const CHILD_MODE: &str = "INTERFLOW_TEST_CHILD_MODE";

fn channel() -> ChannelId {
    fixtures::a_to_b()
}

fn key() -> SigningKey {
    fixtures::key(1)
}

fn submission(n: u64) -> NewRecord {
    let mut record = fixtures::sample_record(-(n as i64));
    record.payload = fixtures::contraception(ContraceptionMethod::Iud, (n % 28 + 1) as u32);
    {
        record.idempotency = Some(fixtures::idempotency(&format!("key-{n}")));
        record
    }
}

/// The child: appends batches until killed (or for at most 60 s, so that an orphan ends),
/// printing `acked <seq> <id>` for each record only after `append_outbound` returned.
#[test]
fn child_process_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // Run as a normal test: nothing to do; the parents below drive it.
    };
    let store = Store::open(
        Path::new(&dir),
        StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
    )
    .unwrap();
    let mode = std::env::var(CHILD_MODE).unwrap_or_default();
    if mode == "concurrent" {
        return concurrent_submitters(&store);
    }
    let one_batch = mode == "one-batch";
    let start = Instant::now();
    let mut n = store.head(channel()).0;
    let mut batch = 1u64;
    while start.elapsed() < Duration::from_secs(60) {
        let items: Vec<_> = (0..batch).map(|i| submission(n + i + 1)).collect();
        println!("begin");
        let out = store.append_outbound(&key(), &items).unwrap();
        for o in out {
            n += 1;
            match o {
                AppendOutcome::Stored(id) => println!("acked {n} {id}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        if one_batch {
            return;
        }
        batch = batch % 17 + 1;
    }
}

/// Four threads append at once, each two groups per call (as concurrent Submit calls do), a
/// few rounds; each prints `begin` before a call and `acked` for its records after it.
fn concurrent_submitters(store: &Store) {
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                for round in 0..3u64 {
                    let base = 1000 * (t + 1) + 100 * round;
                    let a: Vec<_> = (0..5).map(|i| submission(base + i)).collect();
                    let b: Vec<_> = (5..8).map(|i| submission(base + i)).collect();
                    let groups = [&a, &b]
                        .map(|items| OutboundGroup { items, audit: None })
                        .into();
                    println!("begin");
                    let out = store.append_outbound_groups(&key(), groups).unwrap();
                    for o in out.iter().flatten() {
                        match o {
                            AppendOutcome::Stored(id) => println!("acked {id}"),
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
            });
        }
    });
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn child(dir: &Path, mode: &str, wrapper: Option<Vec<String>>) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match wrapper {
        Some(w) => {
            let mut c = Command::new(&w[0]);
            c.args(&w[1..]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args([
        "--exact",
        "child_process_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, dir)
    .env(CHILD_MODE, mode)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    cmd
}

/// A small deterministic generator, so failures replay.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn sigkill_at_random_moments_never_loses_an_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(0x1f2e_3d4c);
    let mut acked: Vec<(u64, RecordId)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    for round in 0..24 {
        assert!(
            Instant::now() < deadline,
            "crash test exceeded its time bound at round {round}"
        );
        let mut c = KillOnDrop(child(dir.path(), "loop", None).spawn().unwrap());
        let out = c.0.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        // Kill after a random number of acknowledgements; the child keeps writing meanwhile,
        // so the kill lands at a random point of a batch, a flush or an fsync.
        let wait_for = 1 + rng.next(40);
        let mut seen = 0;
        while seen < wait_for {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(rest) = line.strip_prefix("acked ") {
                let mut parts = rest.split(' ');
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                let id = RecordId::from_hex(parts.next().unwrap()).unwrap();
                acked.push((seq, id));
                seen += 1;
            }
        }
        // SAFETY-free SIGKILL through std: `Child::kill` sends SIGKILL on Unix.
        c.0.kill().unwrap();
        // Drain what the child printed before it died: those were acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("acked ") {
                let mut parts = rest.split(' ');
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                acked.push((seq, RecordId::from_hex(parts.next().unwrap()).unwrap()));
            }
        }
        drop(c);

        let store = Store::open(
            dir.path(),
            StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
        )
        .unwrap();
        assert_eq!(
            store.write_refusal().map(|e| e.to_string()),
            None,
            "round {round}: integrity check failed after SIGKILL"
        );
        for (seq, id) in &acked {
            let rec = store.record_at(channel(), *seq).unwrap();
            assert_eq!(
                rec.map(|r| r.id()),
                Some(*id),
                "round {round}: acknowledged seq {seq} lost or changed"
            );
        }
        let report = store.verify_log(&|_| Some(key().verifying_key())).unwrap();
        assert!(report.ok(), "round {round}: {:?}", report.problems);
    }
    assert!(
        acked.len() >= 24,
        "the children acknowledged too little to test anything"
    );
}

#[test]
fn an_fsync_of_the_data_file_precedes_the_acknowledgement() {
    acks_follow_an_fsync_begun_after_their_call("one-batch");
}

#[test]
fn concurrent_submitters_are_acknowledged_only_after_an_fsync_that_covers_them() {
    acks_follow_an_fsync_begun_after_their_call("concurrent");
}

/// Runs the child in `mode` under strace and checks, per thread, that each `acked` line comes
/// after an fsync of the data file that returned after that thread's `begin`: no record is
/// acknowledged on the strength of an fsync that ran before it was written.
fn acks_follow_an_fsync_begun_after_their_call(mode: &str) {
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(strace) = strace else {
        eprintln!(
            "SKIPPED: strace is not installed; install it (apt-get install strace) to run this check"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // Create the store first, so the traced run only appends.
    drop(
        Store::open(
            &data,
            StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
        )
        .unwrap(),
    );
    let wrapper = vec![
        strace.to_string(),
        "-f".into(),
        "-e".into(),
        "trace=openat,fsync,fdatasync,write".into(),
        "-o".into(),
        log.display().to_string(),
    ];
    let status = child(&data, mode, Some(wrapper))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "traced child failed: {status}");
    let trace = std::fs::read_to_string(&log).unwrap();
    if trace.contains("PTRACE")
        || trace.contains("Operation not permitted") && !trace.contains("openat")
    {
        eprintln!("SKIPPED: ptrace is not permitted here");
        return;
    }
    let db_path = format!("{}/db\"", data.display());
    let mut db_fds = Vec::new();
    // Per thread: where its latest `begin` started; where the latest returned sync started.
    let mut begun: std::collections::HashMap<String, usize> = Default::default();
    let mut synced: Option<usize> = None;
    let mut acked = 0;
    // Calls in the order they finished, each with where it started: a sync counts for a
    // thread's acknowledgement only if it started after the thread's `begin`.
    for (n, line) in joined_calls_with_start(&trace) {
        let tid = line.split_once(' ').map_or("", |(t, _)| t).to_owned();
        // The store's own sync handle is the read-only one; sled's fd gets fsyncs of its own
        // at times (e.g. on open), which must not count.
        if line.contains("openat(") && line.contains(&db_path) && line.contains("O_RDONLY") {
            let fd = line
                .rsplit("= ")
                .next()
                .and_then(|s| s.trim().parse::<i32>().ok());
            db_fds.extend(fd);
        }
        if line.contains("write(1, \"begin") {
            begun.insert(tid.clone(), n);
        }
        // A sync counts once it has returned: `fsync(4) = 0`.
        if (line.contains("fsync(") || line.contains("fdatasync(")) && line.ends_with("= 0") {
            let fd = line
                .split_once("sync(")
                .map(|(_, rest)| {
                    rest.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .and_then(|d| d.parse::<i32>().ok());
            if fd.is_some_and(|fd| db_fds.contains(&fd)) {
                synced = Some(n);
            }
        }
        if line.contains("write(1, \"acked") {
            let began = begun.get(&tid).copied();
            assert!(
                began.is_some() && synced > began,
                "thread {tid} acknowledged a record before an fsync of the data file that followed its call:\n{trace}"
            );
            acked += 1;
        }
    }
    assert!(acked > 0, "the traced child acknowledged nothing:\n{trace}");
    if mode == "concurrent" {
        assert_eq!(acked, 4 * 3 * 8, "every record acknowledged once");
    }
}

/// strace's lines with each call whole: under load, threads interleave and strace splits a
/// call into `pid call(args <unfinished ...>` and, later, `pid <... call resumed>rest`. The
/// pieces are joined (in the order the calls finish), so no call is seen half.
fn joined_calls(trace: &str) -> Vec<String> {
    joined_calls_with_start(trace)
        .into_iter()
        .map(|(_, l)| l)
        .collect()
}

/// As [`joined_calls`], each call with the line number where it started.
fn joined_calls_with_start(trace: &str) -> Vec<(usize, String)> {
    let mut open: std::collections::HashMap<&str, (usize, String)> =
        std::collections::HashMap::new();
    let mut out = Vec::new();
    for (n, line) in trace.lines().enumerate() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("", line));
        if let Some(start) = rest.strip_suffix("<unfinished ...>") {
            open.insert(pid, (n, format!("{pid} {}", start.trim_end())));
        } else if let Some((_, tail)) = rest.split_once(" resumed>") {
            let (at, head) = open.remove(pid).unwrap_or_else(|| (n, format!("{pid} ")));
            out.push((at, format!("{head}{tail}")));
        } else {
            out.push((n, line.to_owned()));
        }
    }
    out
}

#[test]
fn split_strace_calls_are_joined_before_they_are_read() {
    let trace = "\
7 openat(AT_FDCWD, \"/d/db\", O_RDONLY|O_CLOEXEC <unfinished ...>
8 write(1, \"begin\\n\", 6) = 6
7 <... openat resumed>) = 5
8 fsync(5 <unfinished ...>
7 write(2, \"x\", 1) = 1
8 <... fsync resumed>) = 0
8 write(1, \"acked\\n\", 6) = 6";
    let lines = joined_calls(trace);
    assert_eq!(
        lines,
        vec![
            "8 write(1, \"begin\\n\", 6) = 6",
            "7 openat(AT_FDCWD, \"/d/db\", O_RDONLY|O_CLOEXEC) = 5",
            "7 write(2, \"x\", 1) = 1",
            "8 fsync(5) = 0",
            "8 write(1, \"acked\\n\", 6) = 6",
        ]
    );
}
