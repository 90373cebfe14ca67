//! `interflow bench`: an operator's load test of the record path, like `pgbench` or
//! `nats bench`. It starts a two-node federation of separate `interflow serve` processes in a
//! temp dir (or targets the first two nodes of a running dev federation), drives
//! `Intake.Submit` at node A for records to node B flat out or at a chosen rate, and reports:
//! intake rate, end-to-end rate (records stored at B and receipted at A, read from A's
//! `Admin.ListPending`), Submit latency percentiles, CPU and RSS per node process (from
//! `/proc`), store bytes per record, and this machine's Ed25519 ceilings measured in the same
//! run, with the ratios. Synthetic records only (the dev generator's IDs and payloads).
//!
//! Two phases on request, on the federation it starts: `--catch-up` stops B before submitting,
//! so A's intake is measured alone, then starts B again and times the catch-up of the backlog;
//! `--reopen` stops A cleanly after the run and times its start on the full store, from spawn
//! to the first `Admin` answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use interflow_core::pb;
use interflow_core::sign::Domain;
use interflow_core::sm2_suite::Sm2SigningKey;
use serde::Serialize;
use tonic::transport::Channel;

use crate::dev::{DevFederation, DevNode, DevOptions, generate_with_options, sample_submission};

/// What to run; see `interflow bench --help`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Stop submitting after this long (unless `records` comes first).
    pub duration: Option<Duration>,
    /// Stop submitting after this many records.
    pub records: Option<u64>,
    /// Records per second to offer; flat out when `None`.
    pub rate: Option<u64>,
    /// Items per Submit call.
    pub batch: usize,
    /// Concurrent submitters, each on its own connection.
    pub concurrency: usize,
    /// Target a running dev federation (its first two nodes) instead of starting one.
    pub dev_dir: Option<PathBuf>,
    /// How long to wait, after submitting stops, for B to have everything receipted.
    pub drain_timeout: Duration,
    /// `[limits] peer_records_per_sec` (and the burst) of the federation the bench starts.
    pub peer_records_per_sec: u32,
    /// The started federation's nodes sign with SM2 keys (the national suite) instead of
    /// Ed25519.
    pub sm2: bool,
    /// Stop B (cleanly) before submitting, so A's intake runs alone, and start it again once
    /// submitting stops: the catch-up of the backlog is timed. Only on the started federation.
    pub catch_up: bool,
    /// After the run, stop A cleanly and start it again on the same data directory: the time
    /// to its first `Admin` answer is measured. Only on the started federation.
    pub reopen: bool,
    /// The `interflow` binary to run as `serve` (normally this one).
    pub exe: PathBuf,
}

/// Signature rates of one core of this machine, measured in this run: Ed25519 (the default
/// suite) and SM2 with SM3 (the national suite).
#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    pub cores: usize,
    pub sign_per_core: f64,
    pub verify_strict_per_core: f64,
    pub batch_verify_per_core: f64,
    pub sm2_sign_per_core: f64,
    pub sm2_verify_per_core: f64,
}

/// One node process over the run: CPU it used (in cores, over the end-to-end time), its
/// resident memory at the end and at peak, and its data directory's size per record.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFigures {
    pub region: String,
    pub pid: Option<u32>,
    pub cpu_cores: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub rss_peak_bytes: Option<u64>,
    pub store_bytes: u64,
    pub records: u64,
    pub store_bytes_per_record: Option<f64>,
}

/// One sample of the run's progress.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_secs: f64,
    pub submitted: u64,
    pub receipted: u64,
}

/// What `interflow bench` prints (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub ceilings: Ceilings,
    /// The record-signing suite of the run: `ed25519` or `sm2_sm3`.
    pub suite: &'static str,
    pub batch: usize,
    pub concurrency: usize,
    pub offered_rate: Option<u64>,
    pub submitted: u64,
    pub submit_errors: u64,
    pub intake_secs: f64,
    pub intake_rate: f64,
    pub receipted: u64,
    pub end_to_end_secs: f64,
    pub end_to_end_rate: f64,
    /// Everything submitted was receipted before the drain timeout.
    pub drained: bool,
    pub submit_latency_ms: Latency,
    /// Intake rate over the cores' sign ceiling of the run's suite (sign rate per core × cores).
    pub intake_of_sign_ceiling: f64,
    /// End-to-end rate over the cores' verify ceiling of the run's suite: Ed25519 batch
    /// verification, or SM2 verification (which has no batch form).
    pub end_to_end_of_batch_verify_ceiling: f64,
    pub nodes: Vec<ProcessFigures>,
    /// Absent unless `--catch-up`.
    #[serde(flatten)]
    pub catch_up: Option<CatchUp>,
    /// Absent unless `--reopen`.
    #[serde(flatten)]
    pub reopen: Option<Reopen>,
    pub samples: Vec<Sample>,
    /// Submit latencies in µs at each whole percentile 0..=100, for the chart.
    #[serde(skip)]
    pub latency_curve_us: Vec<(f64, u64)>,
}

/// `--catch-up`: A's intake while B was stopped, and B's catch-up of that backlog once started
/// again. In such a run the end-to-end figures span both phases.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUp {
    /// Records A took while B was stopped.
    pub catch_up_backlog: u64,
    pub intake_alone_secs: f64,
    pub intake_alone_rate: f64,
    /// From B's spawn to the first new receipt at A: B's start and A's delivery noticing it.
    pub catch_up_first_receipt_secs: Option<f64>,
    /// From B's spawn to the last receipt at A (everything, when the run `drained`).
    pub catch_up_secs: f64,
    /// Records receipted after B's spawn over `catch_up_secs`.
    pub catch_up_rate: f64,
}

/// `--reopen`: node A stopped cleanly after the run and started again on its data directory.
#[derive(Debug, Clone, Serialize)]
pub struct Reopen {
    /// From SIGTERM to A's exit.
    pub reopen_stop_secs: f64,
    /// From A's spawn to its first `Admin.ListPending` answer.
    pub reopen_secs: f64,
    /// Records in A's store (outbound and inbound), as its `Admin.Stats` answers after the start.
    pub reopen_records: u64,
    /// A's resident memory right after that first answer.
    pub reopen_rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub calls: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// How long each ceiling is measured.
const CEILING_TIME: Duration = Duration::from_millis(300);
/// Records per batch-verify call in the ceiling (as the receiver's batches).
const CEILING_BATCH: usize = 64;
/// Bytes signed per ceiling operation: about one record body.
const CEILING_MSG: usize = 200;

/// Measures this machine's signature rates on one core: Ed25519 sign, `verify_strict` and batch
/// verify, and SM2 sign and verify.
pub fn measure_ceilings() -> Ceilings {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let vk: VerifyingKey = key.verifying_key();
    let msgs: Vec<Vec<u8>> = (0..CEILING_BATCH)
        .map(|i| {
            let mut m = vec![0u8; CEILING_MSG];
            m[..8].copy_from_slice(&(i as u64).to_le_bytes());
            m
        })
        .collect();
    let sigs: Vec<ed25519_dalek::Signature> = msgs.iter().map(|m| key.sign(m)).collect();
    let rate = |mut op: Box<dyn FnMut() -> usize>| {
        let start = Instant::now();
        let mut n = 0usize;
        while start.elapsed() < CEILING_TIME {
            n += op();
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let sign_per_core = rate(Box::new(|| {
        std::hint::black_box(key.sign(&msgs[0]));
        1
    }));
    let verify_strict_per_core = rate(Box::new(|| {
        let ok = vk.verify_strict(&msgs[1], &sigs[1]).is_ok();
        std::hint::black_box(ok);
        1
    }));
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let keys = vec![vk; CEILING_BATCH];
    let batch_verify_per_core = rate(Box::new(|| {
        let ok = ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok();
        std::hint::black_box(ok);
        CEILING_BATCH
    }));
    let sm2 = Sm2SigningKey::generate();
    let sm2_vk = sm2.verifying_key();
    let sm2_sig = sm2.sign(Domain::Record, &msgs[1]);
    let sm2_sign_per_core = rate(Box::new(|| {
        std::hint::black_box(sm2.sign(Domain::Record, &msgs[0]));
        1
    }));
    let sm2_verify_per_core = rate(Box::new(|| {
        let ok = sm2_vk.verify(Domain::Record, &msgs[1], &sm2_sig).is_ok();
        std::hint::black_box(ok);
        1
    }));
    Ceilings {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        sign_per_core,
        verify_strict_per_core,
        batch_verify_per_core,
        sm2_sign_per_core,
        sm2_verify_per_core,
    }
}

/// A node process the bench started; killed when dropped.
struct Served {
    child: std::process::Child,
}

/// How long a node may take to stop after SIGTERM, or to answer after its spawn.
const NODE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a stopping or starting node is looked at: the resolution of the stop and open
/// times.
const NODE_POLL: Duration = Duration::from_millis(5);

impl Served {
    /// Stops the node as an operator does, with SIGTERM (which `interflow serve` answers with a
    /// clean shutdown), and waits for it to exit; answers how long that took.
    async fn stop(&mut self, region: &str) -> anyhow::Result<Duration> {
        let pid = self.child.id().to_string();
        let t = Instant::now();
        // kill(1), as the kill tests do: sending one signal needs neither a crate nor unsafe.
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .context("running `kill`")?;
        anyhow::ensure!(sent.success(), "`kill -TERM {pid}` failed");
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "node {region} exited with {status} after SIGTERM; see its serve.log"
                );
                return Ok(t.elapsed());
            }
            anyhow::ensure!(
                t.elapsed() < NODE_TIMEOUT,
                "node {region} did not stop within {} s of SIGTERM",
                NODE_TIMEOUT.as_secs()
            );
            tokio::time::sleep(NODE_POLL).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SIGKILL: a bench federation's data is thrown away with its temp dir.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// glibc gives each thread that allocates while the others hold theirs a malloc arena of its
/// own, up to 8 per core, and keeps what each one grew to: with signing threads and the
/// blocking pool a node's RSS doubled (A: 530-570 MiB after 80 k records, 280 MiB with 2
/// arenas, the rate unchanged). The deployment files set the same.
pub const MALLOC_ARENA_MAX: (&str, &str) = ("MALLOC_ARENA_MAX", "2");

fn serve(exe: &Path, node: &DevNode) -> anyhow::Result<Served> {
    let log_path = node
        .config
        .parent()
        .map(|d| d.join("serve.log"))
        .unwrap_or_else(|| PathBuf::from("serve.log"));
    // Appended: a node started again (`--catch-up`, `--reopen`) keeps the earlier lines.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening `{}`", log_path.display()))?;
    let child = std::process::Command::new(exe)
        .args(["serve", "--config"])
        .arg(&node.config)
        .env("RUST_LOG", "warn")
        // As the deployment files run a node (README, Performance: memory).
        .env(MALLOC_ARENA_MAX.0, MALLOC_ARENA_MAX.1)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting `{} serve`", exe.display()))?;
    Ok(Served { child })
}

async fn connect(node: &DevNode, admin: bool) -> anyhow::Result<Channel> {
    let (cert, key) = if admin {
        (&node.admin_cert, &node.admin_key)
    } else {
        (&node.intake_cert, &node.intake_key)
    };
    let cfg = interflow_tls::client_config(&node.local_ca, cert, key)?;
    let region = node.region.parse()?;
    Ok(interflow_tls::connect(
        &node.local_addr.to_string(),
        &interflow_tls::local_server_name(region),
        cfg,
        Duration::from_secs(5),
    )
    .await?)
}

/// A's channel to B as A's `ListPending` shows it: (head, receipted).
async fn pending_to(
    admin: &mut pb::admin_client::AdminClient<Channel>,
    dest: &str,
) -> Option<(u64, u64)> {
    let r = admin.list_pending(pb::ListPendingRequest {}).await.ok()?;
    r.into_inner()
        .channels
        .into_iter()
        .find(|c| c.destination == dest)
        .map(|c| (c.head_seq, c.acked_seq))
}

/// Waits until `node` answers `Admin.ListPending`, and answers its Admin client.
async fn first_admin_answer(
    node: &DevNode,
    since: Instant,
) -> anyhow::Result<pb::admin_client::AdminClient<Channel>> {
    loop {
        if let Ok(ch) = connect(node, true).await {
            let mut admin = pb::admin_client::AdminClient::new(ch);
            if admin.list_pending(pb::ListPendingRequest {}).await.is_ok() {
                return Ok(admin);
            }
        }
        anyhow::ensure!(
            since.elapsed() < NODE_TIMEOUT,
            "node {} did not answer within {} s of its start; see its serve.log",
            node.region,
            NODE_TIMEOUT.as_secs()
        );
        tokio::time::sleep(NODE_POLL).await;
    }
}

/// CPU seconds (user + system) and resident/peak memory of a process, from `/proc`.
fn proc_figures(pid: u32) -> Option<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let f = crate::process::stat_fields(&stat);
    // proc(5) field 14 is utime and 15 stime; `stat_fields` starts at field 3.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    Some((
        ticks as f64 / crate::process::TICKS_PER_SEC,
        kb("VmRSS:")?,
        kb("VmHWM:")?,
    ))
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A node's data directory, as its config names it (relative to the config file).
fn data_dir(node: &DevNode) -> anyhow::Result<PathBuf> {
    let cfg = crate::Config::load(&node.config)
        .with_context(|| format!("loading `{}`", node.config.display()))?;
    Ok(cfg.data_dir.clone())
}

/// The delivery backoff of a `--catch-up` federation: A's worker fails against the stopped B
/// and backs off; the dev configs' 2 s cap (up to twice that with jitter) would be a large
/// part of the catch-up time, which is to measure the record path. Nothing else wakes a
/// backing-off worker when the peer comes back.
const CATCH_UP_BACKOFF_MS: (i64, i64) = (50, 250);

/// Tunes a generated config for the bench: raises the per-peer record limit, which otherwise
/// bounds what one peer may deliver (a defence against a flooding peer, not a cost of the
/// record path), and for `--catch-up` shortens the delivery backoff.
fn tune_config(node: &DevNode, opts: &BenchOptions) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&node.config)
        .with_context(|| format!("reading `{}`", node.config.display()))?;
    let mut cfg: toml::Table = text
        .parse()
        .with_context(|| format!("parsing `{}`", node.config.display()))?;
    let mut set = |table: &str, key: &str, value: i64| {
        let t = cfg
            .entry(table)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = t {
            t.insert(key.to_owned(), toml::Value::Integer(value));
        }
    };
    let per_sec = i64::from(opts.peer_records_per_sec);
    set("limits", "peer_records_per_sec", per_sec);
    set("limits", "peer_records_burst", per_sec);
    if opts.catch_up {
        set("delivery", "min_backoff_ms", CATCH_UP_BACKOFF_MS.0);
        set("delivery", "max_backoff_ms", CATCH_UP_BACKOFF_MS.1);
    }
    std::fs::write(&node.config, cfg.to_string())
        .with_context(|| format!("writing `{}`", node.config.display()))
}

/// Runs the bench and returns its report.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(opts.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(opts.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        opts.duration.is_some() || opts.records.is_some(),
        "give --duration or --records"
    );
    anyhow::ensure!(opts.rate != Some(0), "--rate must be at least 1");
    anyhow::ensure!(
        opts.dev_dir.is_none() || !(opts.catch_up || opts.reopen),
        "--catch-up and --reopen stop and start nodes, so they run only on the federation the bench starts (without --dev-dir)"
    );
    // Ceilings first, while nothing else of ours runs.
    let ceilings = tokio::task::spawn_blocking(measure_ceilings).await?;

    let _tmp;
    let mut served = Vec::new();
    let fed = match &opts.dev_dir {
        Some(dir) => DevFederation::load(dir)?,
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("interflow-bench-")
                .tempdir()
                .context("creating a temp dir for the bench federation")?;
            let mut addrs = Vec::new();
            for _ in 0..2 {
                let free = || -> anyhow::Result<std::net::SocketAddr> {
                    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
                };
                addrs.push((free()?, free()?));
            }
            let endpoints: Vec<_> = addrs.iter().map(|(peer, _)| *peer).collect();
            let options = DevOptions {
                sm2: opts.sm2,
                ..Default::default()
            };
            let fed = generate_with_options(
                tmp.path(),
                &addrs,
                &endpoints,
                crate::system_clock()(),
                options,
            )?;
            for n in &fed.nodes {
                tune_config(n, opts)?;
                served.push(serve(&opts.exe, n)?);
            }
            _tmp = tmp;
            fed
        }
    };
    anyhow::ensure!(
        fed.nodes.len() >= 2,
        "the federation has fewer than two nodes"
    );
    let (a, b) = (fed.nodes[0].clone(), fed.nodes[1].clone());
    let run_id = format!("{:x}", crate::system_clock()());

    // Ready: one record submitted and receipted, which also warms the connections.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut admin = first_admin_answer(&a, Instant::now()).await?;
    let mut warm = pb::intake_client::IntakeClient::new(connect(&a, false).await?);
    loop {
        let mut item = sample_submission(0, &b.region);
        item.idempotency_key = format!("bench-{run_id}-warm");
        let stored = warm
            .submit(pb::SubmitRequest { items: vec![item] })
            .await
            .map(|r| {
                r.into_inner()
                    .results
                    .iter()
                    .all(|r| matches!(r.outcome, Some(pb::submit_result::Outcome::RecordId(_))))
            })
            .unwrap_or(false);
        if stored {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {} accepted no record (held?); see its serve.log",
            a.region
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = loop {
        if let Some((head, acked)) = pending_to(&mut admin, &b.region).await
            && head == acked
        {
            break acked;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {} did not receipt the first record",
            b.region
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // `--catch-up`: A takes the submissions alone.
    if opts.catch_up {
        served[1].stop(&b.region).await?;
    }
    let mut pids: Vec<Option<u32>> = if served.is_empty() {
        vec![None, None]
    } else {
        served.iter().map(|s| Some(s.child.id())).collect()
    };
    let mut cpu0: Vec<Option<f64>> = pids
        .iter()
        .map(|p| p.and_then(proc_figures).map(|f| f.0))
        .collect();
    if opts.catch_up {
        pids[1] = None;
        cpu0[1] = None;
    }

    // Drive.
    let submitted = Arc::new(AtomicU64::new(0));
    let claimed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop_at = opts.duration.map(|d| start + d);
    let mut workers = Vec::new();
    for w in 0..opts.concurrency {
        let ch = connect(&a, false).await?;
        let (submitted, claimed, errors) = (submitted.clone(), claimed.clone(), errors.clone());
        let (dest, run_id, batch, rate, limit) = (
            b.region.clone(),
            run_id.clone(),
            opts.batch as u64,
            opts.rate,
            opts.records,
        );
        workers.push(tokio::spawn(async move {
            let mut intake = pb::intake_client::IntakeClient::new(ch)
                .max_decoding_message_size(64 * 1024 * 1024);
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
                .map_err(|e| anyhow::anyhow!("latency histogram: {e}"))?;
            loop {
                if stop_at.is_some_and(|s| Instant::now() >= s) {
                    break;
                }
                // Claim the next `batch` record numbers, fewer at the `--records` limit.
                let first = claimed.fetch_add(batch, Ordering::Relaxed);
                let n = match limit {
                    Some(l) if first >= l => break,
                    Some(l) => batch.min(l - first),
                    None => batch,
                };
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(first as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let items: Vec<_> = (first..first + n)
                    .map(|k| {
                        let mut s = sample_submission(k, &dest);
                        s.idempotency_key = format!("bench-{run_id}-{k}");
                        s
                    })
                    .collect();
                let t = Instant::now();
                let request = pb::SubmitRequest { items };
                // A busy node stored nothing of the call: send it again after its hint, as
                // `interflowctl submit` does; the wait counts in the call's latency.
                let answer = loop {
                    match intake.submit(request.clone()).await {
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            match interflow_core::retry_after(&s) {
                                Some(wait) => tokio::time::sleep(wait).await,
                                None => break Err(s),
                            }
                        }
                        other => break other,
                    }
                };
                match answer {
                    Ok(r) => {
                        let us = t.elapsed().as_micros() as u64;
                        hist.saturating_record(us.max(1));
                        let ok = r
                            .into_inner()
                            .results
                            .iter()
                            .filter(|r| matches!(r.outcome, Some(pb::submit_result::Outcome::RecordId(_))))
                            .count() as u64;
                        submitted.fetch_add(ok, Ordering::Relaxed);
                        errors.fetch_add(n - ok, Ordering::Relaxed);
                    }
                    Err(status) => {
                        errors.fetch_add(n, Ordering::Relaxed);
                        tracing::warn!(worker = w, code = ?status.code(), message = status.message(), "Submit failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            // When this submitter's last call was answered: the intake time, to the call
            // rather than to the sample tick.
            anyhow::Ok((hist, Instant::now()))
        }));
    }

    // Sample progress until the submitters are done, then until B has it all or time is up.
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut submit_done = false;
    let mut end_to_end_secs = 0.0;
    let mut receipted = 0;
    let mut drained = false;
    let mut drain_deadline = None;
    let mut rss_peak = vec![0u64; pids.len()];
    let mut catch_up: Option<CatchUpClock> = None;
    loop {
        tick.tick().await;
        let t = start.elapsed().as_secs_f64();
        if let Some((_, acked)) = pending_to(&mut admin, &b.region).await {
            let now = acked.saturating_sub(base);
            if now > receipted {
                end_to_end_secs = t;
                if let Some(c) = &mut catch_up {
                    c.first_receipt.get_or_insert(t);
                    c.last_receipt = t;
                }
            }
            receipted = now;
        }
        for (peak, pid) in rss_peak.iter_mut().zip(&pids) {
            if let Some((_, rss, _)) = pid.and_then(proc_figures) {
                *peak = (*peak).max(rss);
            }
        }
        let done = workers.iter().all(|w| w.is_finished());
        let sub = submitted.load(Ordering::Relaxed);
        samples.push(Sample {
            t_secs: t,
            submitted: sub,
            receipted,
        });
        if done && !submit_done {
            submit_done = true;
            drain_deadline = Some(Instant::now() + opts.drain_timeout);
            if opts.catch_up {
                let spawned = start.elapsed().as_secs_f64();
                served[1] = serve(&opts.exe, &b)?;
                // The new process's CPU is all the run's.
                pids[1] = Some(served[1].child.id());
                cpu0[1] = Some(0.0);
                catch_up = Some(CatchUpClock {
                    spawned,
                    receipted_before: receipted,
                    first_receipt: None,
                    last_receipt: spawned,
                });
                tick = tokio::time::interval(CATCH_UP_POLL);
            }
        }
        if done && receipted >= sub {
            drained = true;
            break;
        }
        if drain_deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| anyhow::anyhow!("latency histogram: {e}"))?;
    let mut submit_end = start;
    for w in workers {
        let (h, finished) = w.await??;
        hist.add(h)
            .map_err(|e| anyhow::anyhow!("latency histogram: {e}"))?;
        submit_end = submit_end.max(finished);
    }
    let submitted = submitted.load(Ordering::Relaxed);
    let submit_errors = errors.load(Ordering::Relaxed);
    let intake_secs = submit_end.duration_since(start).as_secs_f64().max(1e-9);
    let end_to_end_secs = end_to_end_secs.max(1e-9);

    let mut nodes = Vec::new();
    for (i, node) in [&a, &b].into_iter().enumerate() {
        let pid = pids[i];
        let figs = pid.and_then(proc_figures);
        let cpu = match (figs, cpu0[i]) {
            (Some((c1, _, _)), Some(c0)) => Some((c1 - c0) / end_to_end_secs),
            _ => None,
        };
        let mut stats = pb::admin_client::AdminClient::new(connect(node, true).await?);
        let s = stats.stats(pb::StatsRequest {}).await?.into_inner();
        let records = if i == 0 {
            s.records_outbound
        } else {
            s.records_inbound
        };
        let store_bytes = dir_bytes(&data_dir(node)?);
        nodes.push(ProcessFigures {
            region: node.region.clone(),
            pid,
            cpu_cores: cpu,
            rss_bytes: figs.map(|f| f.1),
            rss_peak_bytes: figs.map(|f| f.2.max(rss_peak[i])),
            store_bytes,
            records,
            store_bytes_per_record: (records > 0).then(|| store_bytes as f64 / records as f64),
        });
    }
    let catch_up = catch_up.map(|c| c.figures(submitted, intake_secs, receipted));
    let reopen = match served.first_mut() {
        Some(served_a) if opts.reopen => Some(reopen(&opts.exe, &a, served_a).await?),
        _ => None,
    };
    drop(served);

    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let submit_latency_ms = Latency {
        calls: hist.len(),
        p50: ms(0.50),
        p95: ms(0.95),
        p99: ms(0.99),
        max: hist.max() as f64 / 1000.0,
    };
    let latency_curve_us = (0..=100)
        .map(|p| (p as f64, hist.value_at_quantile(p as f64 / 100.0)))
        .collect();
    let intake_rate = submitted as f64 / intake_secs;
    let end_to_end_rate = receipted as f64 / end_to_end_secs;
    let cores = ceilings.cores as f64;
    let (suite, sign, verify) = if opts.sm2 {
        (
            "sm2_sm3",
            ceilings.sm2_sign_per_core,
            ceilings.sm2_verify_per_core,
        )
    } else {
        (
            "ed25519",
            ceilings.sign_per_core,
            ceilings.batch_verify_per_core,
        )
    };
    Ok(BenchReport {
        intake_of_sign_ceiling: intake_rate / (sign * cores),
        end_to_end_of_batch_verify_ceiling: end_to_end_rate / (verify * cores),
        ceilings,
        suite,
        batch: opts.batch,
        concurrency: opts.concurrency,
        offered_rate: opts.rate,
        submitted,
        submit_errors,
        intake_secs,
        intake_rate,
        receipted,
        end_to_end_secs,
        end_to_end_rate,
        drained,
        submit_latency_ms,
        nodes,
        catch_up,
        reopen,
        samples,
        latency_curve_us,
    })
}

/// How often A's `ListPending` is read while B catches up: finer than during the submit
/// phase (each read is an audited call), since the phase is short.
const CATCH_UP_POLL: Duration = Duration::from_millis(100);

/// The catch-up phase as the sample loop sees it (seconds since the submit phase began).
struct CatchUpClock {
    spawned: f64,
    receipted_before: u64,
    first_receipt: Option<f64>,
    last_receipt: f64,
}

impl CatchUpClock {
    fn figures(&self, backlog: u64, intake_secs: f64, receipted: u64) -> CatchUp {
        let secs = (self.last_receipt - self.spawned).max(1e-9);
        CatchUp {
            catch_up_backlog: backlog,
            intake_alone_secs: intake_secs,
            intake_alone_rate: backlog as f64 / intake_secs,
            catch_up_first_receipt_secs: self.first_receipt.map(|t| t - self.spawned),
            catch_up_secs: secs,
            catch_up_rate: receipted.saturating_sub(self.receipted_before) as f64 / secs,
        }
    }
}

/// Stops A cleanly and starts it again on the same data directory; times both.
async fn reopen(exe: &Path, a: &DevNode, served: &mut Served) -> anyhow::Result<Reopen> {
    let stop = served.stop(&a.region).await?;
    let spawned = Instant::now();
    *served = serve(exe, a)?;
    let mut admin = first_admin_answer(a, spawned).await?;
    let secs = spawned.elapsed();
    let rss = proc_figures(served.child.id()).map(|f| f.1);
    let s = admin.stats(pb::StatsRequest {}).await?.into_inner();
    Ok(Reopen {
        reopen_stop_secs: stop.as_secs_f64(),
        reopen_secs: secs.as_secs_f64(),
        reopen_records: s.records_outbound + s.records_inbound,
        reopen_rss_bytes: rss,
    })
}

/// The report as a person reads it.
pub fn human(r: &BenchReport) -> String {
    let mib = |b: Option<u64>| {
        b.map_or("-".to_owned(), |b| {
            format!("{:.0} MiB", b as f64 / 1048576.0)
        })
    };
    let mut s = String::new();
    let c = &r.ceilings;
    s.push_str(&format!(
        "ceilings (one core, this run): sign {:.0}/s  verify_strict {:.0}/s  batch verify {:.0}/s  ({} cores)\n",
        c.sign_per_core, c.verify_strict_per_core, c.batch_verify_per_core, c.cores
    ));
    s.push_str(&format!(
        "  SM2 with SM3 (one core): sign {:.0}/s  verify {:.0}/s\n",
        c.sm2_sign_per_core, c.sm2_verify_per_core
    ));
    s.push_str(&format!(
        "load: {} submitters × {} items per Submit, {}, records signed with {}\n",
        r.concurrency,
        r.batch,
        r.offered_rate
            .map_or("flat out".to_owned(), |v| format!("{v} records/s offered")),
        r.suite
    ));
    s.push_str(&format!(
        "intake:      {:>10.0} records/s  ({} records in {:.2} s, {} refused or failed; {:.2} of the sign ceiling)\n",
        r.intake_rate, r.submitted, r.intake_secs, r.submit_errors, r.intake_of_sign_ceiling
    ));
    s.push_str(&format!(
        "end to end:  {:>10.0} records/s  ({} receipted in {:.2} s{}{}; {:.2} of the {} ceiling)\n",
        r.end_to_end_rate,
        r.receipted,
        r.end_to_end_secs,
        if r.catch_up.is_some() {
            ", B stopped while submitting"
        } else {
            ""
        },
        if r.drained {
            ""
        } else {
            ", NOT all before the drain timeout"
        },
        r.end_to_end_of_batch_verify_ceiling,
        if r.suite == "sm2_sm3" {
            "SM2 verify"
        } else {
            "batch-verify"
        }
    ));
    if let Some(c) = &r.catch_up {
        s.push_str(&format!(
            "intake alone: {:>9.0} records/s  ({} records in {:.2} s with B stopped)\n",
            c.intake_alone_rate, c.catch_up_backlog, c.intake_alone_secs
        ));
        s.push_str(&format!(
            "catch-up:    {:>10.0} records/s  (backlog receipted {:.2} s after B's start{}; first receipt after {})\n",
            c.catch_up_rate,
            c.catch_up_secs,
            if r.drained { "" } else { ", NOT all" },
            c.catch_up_first_receipt_secs
                .map_or("-".to_owned(), |t| format!("{t:.2} s"))
        ));
    }
    if let Some(o) = &r.reopen {
        s.push_str(&format!(
            "reopen of A: {:.3} s from start to first admin answer ({} records; RSS {}; clean stop took {:.2} s)\n",
            o.reopen_secs,
            o.reopen_records,
            mib(o.reopen_rss_bytes),
            o.reopen_stop_secs
        ));
    }
    let l = &r.submit_latency_ms;
    s.push_str(&format!(
        "Submit latency: p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} calls)\n",
        l.p50, l.p95, l.p99, l.max, l.calls
    ));
    for n in &r.nodes {
        s.push_str(&format!(
            "node {}: CPU {} cores  RSS {} (peak {})  store {:.1} MiB for {} records = {} per record\n",
            n.region,
            n.cpu_cores.map_or("-".to_owned(), |c| format!("{c:.2}")),
            mib(n.rss_bytes),
            mib(n.rss_peak_bytes),
            n.store_bytes as f64 / 1048576.0,
            n.records,
            n.store_bytes_per_record
                .map_or("-".to_owned(), |b| format!("{b:.0} B"))
        ));
    }
    s
}

/// Writes an SVG chart: throughput over time (intake and end to end, per sample interval)
/// above the Submit latency distribution (latency at each percentile).
pub fn write_svg(r: &BenchReport, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let plot = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(380);
        let rates: Vec<(f64, f64, f64)> = r
            .samples
            .windows(2)
            .map(|w| {
                let dt = (w[1].t_secs - w[0].t_secs).max(1e-9);
                (
                    w[1].t_secs,
                    (w[1].submitted - w[0].submitted) as f64 / dt,
                    (w[1].receipted.saturating_sub(w[0].receipted)) as f64 / dt,
                )
            })
            .collect();
        let t_max = r.samples.last().map_or(1.0, |s| s.t_secs).max(0.1);
        let y_max = rates.iter().map(|(_, a, b)| a.max(*b)).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&top)
            .caption("throughput (records/s)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
        chart.configure_mesh().x_desc("seconds").draw()?;
        chart
            .draw_series(LineSeries::new(
                rates.iter().map(|(t, a, _)| (*t, *a)),
                &BLUE,
            ))?
            .label("intake at A")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(
                rates.iter().map(|(t, _, b)| (*t, *b)),
                &RED,
            ))?
            .label("stored at B, receipted at A")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()?;

        let lat_max = r
            .latency_curve_us
            .iter()
            .map(|(_, v)| *v as f64 / 1000.0)
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&bottom)
            .caption("Submit latency by percentile (ms)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..100.0, 0.0..lat_max)?;
        chart.configure_mesh().x_desc("percentile").draw()?;
        chart.draw_series(LineSeries::new(
            r.latency_curve_us
                .iter()
                .map(|(p, v)| (*p, *v as f64 / 1000.0)),
            &BLUE,
        ))?;
        root.present()?;
        Ok(())
    };
    plot().map_err(|e| anyhow::anyhow!("drawing `{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_measured() {
        let c = measure_ceilings();
        assert!(c.sign_per_core > 100.0, "{c:?}");
        assert!(c.verify_strict_per_core > 100.0, "{c:?}");
        // Batch verification amortises the scalar multiplications; it never loses to
        // one-at-a-time by much, even under load.
        assert!(
            c.batch_verify_per_core > c.verify_strict_per_core * 0.8,
            "{c:?}"
        );
    }

    #[test]
    fn chart_is_svg_with_both_panels() {
        let r = BenchReport {
            ceilings: Ceilings {
                cores: 2,
                sign_per_core: 1.0,
                verify_strict_per_core: 1.0,
                batch_verify_per_core: 1.0,
                sm2_sign_per_core: 1.0,
                sm2_verify_per_core: 1.0,
            },
            batch: 10,
            concurrency: 1,
            offered_rate: None,
            submitted: 20,
            submit_errors: 0,
            intake_secs: 1.0,
            intake_rate: 20.0,
            receipted: 20,
            end_to_end_secs: 1.0,
            end_to_end_rate: 20.0,
            drained: true,
            submit_latency_ms: Latency {
                calls: 2,
                p50: 1.0,
                p95: 2.0,
                p99: 2.0,
                max: 2.0,
            },
            suite: "ed25519",
            intake_of_sign_ceiling: 0.0,
            end_to_end_of_batch_verify_ceiling: 0.0,
            nodes: Vec::new(),
            catch_up: None,
            reopen: None,
            samples: vec![
                Sample {
                    t_secs: 0.0,
                    submitted: 0,
                    receipted: 0,
                },
                Sample {
                    t_secs: 0.5,
                    submitted: 10,
                    receipted: 5,
                },
                Sample {
                    t_secs: 1.0,
                    submitted: 20,
                    receipted: 20,
                },
            ],
            latency_curve_us: (0..=100).map(|p| (p as f64, 1000 + p * 10)).collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.svg");
        write_svg(&r, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(svg.contains("throughput (records/s)"));
        assert!(svg.contains("Submit latency by percentile (ms)"));
        assert!(svg.contains("<polyline"));
    }
}
