//! Node configuration: TOML with a `version`, unknown keys refused, validated once at startup
//! into a typed [`Config`] whose paths are absolute. Key material, the directory and the
//! agreements are loaded by [`Config::load_material`], not per connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use interflow_core::agreement::{Agreement, AgreementSet};
use interflow_core::directory::Directory;
use interflow_core::pseudonym::{Epoch, EpochKeys, PseudonymKey};
use interflow_core::{RegionCode, keys, pb};
use prost::Message;
use serde::Deserialize;

/// Environment variable naming the master key file; overrides `[keys] master_key` (for a
/// Kubernetes Secret mounted as a file, or a systemd credential).
pub const MASTER_KEY_ENV: &str = "INTERFLOW_MASTER_KEY_FILE";

/// The only config version this build reads.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file `{path}`: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("config key `{key}` names `{path}`, which does not exist")]
    MissingFile { key: String, path: PathBuf },
    #[error("config key `{key}`: file `{path}`: {reason}")]
    BadFile {
        key: String,
        path: PathBuf,
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: u32,
    region: String,
    #[serde(default)]
    name: String,
    data_dir: PathBuf,
    peer: RawListen,
    #[serde(default)]
    local: Option<RawListen>,
    #[serde(default)]
    metrics: Option<RawListen>,
    keys: RawKeys,
    tls: RawTls,
    federation: RawFederation,
    #[serde(default)]
    pseudonym_keys: Vec<RawPseudonymKey>,
    #[serde(default)]
    delivery: Delivery,
    #[serde(default)]
    reconcile: Reconcile,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    retention: Retention,
    #[serde(default)]
    intake: IntakeQueue,
    #[serde(default)]
    store: StoreTuning,
    /// Read by `interflowctl --config`; the node ignores it.
    #[serde(default)]
    #[allow(dead_code)]
    client: Option<toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    signing_key: PathBuf,
    /// The store's master key (64 hex characters, mode 0600, outside the data directory).
    #[serde(default)]
    master_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    federation_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    crls: Vec<PathBuf>,
    local_ca: PathBuf,
    local_cert: PathBuf,
    local_key: PathBuf,
    #[serde(default)]
    local_crls: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    directory: PathBuf,
    operator_key: PathBuf,
    #[serde(default)]
    agreements: Vec<PathBuf>,
    /// After an agreement is terminated, `Heads` and `Fetch` serve the partner its records
    /// issued while active for this many days, then nothing.
    #[serde(default = "default_termination_grace_days")]
    termination_grace_days: u32,
    /// How often the files a reload reads are checked for changes (a change reloads, as
    /// SIGHUP does); 0 turns the check off.
    #[serde(default = "default_watch_interval_ms")]
    watch_interval_ms: u64,
}

fn default_termination_grace_days() -> u32 {
    30
}

fn default_watch_interval_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPseudonymKey {
    agreement: String,
    /// The key's epoch: 1 for the key an agreement starts with, one more per rotation.
    #[serde(default = "first_epoch")]
    epoch: u32,
    key_file: PathBuf,
}

fn first_epoch() -> u32 {
    1
}

/// One `[[pseudonym_keys]]` entry: the key file of one epoch of one agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PseudonymKeyFile {
    pub agreement: String,
    pub epoch: Epoch,
    pub path: PathBuf,
}

/// Delivery worker tuning.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Push new records to peers at once. Off leaves exchange to reconciliation alone.
    pub enabled: bool,
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Records read from the store at a time for sending.
    pub batch: usize,
    /// Most records sent and not yet receipted: the sender keeps sending while cumulative
    /// receipts come back, up to this many (and `window_bytes`).
    pub window_records: usize,
    /// Most bytes of records sent and not yet receipted (one record always goes out).
    pub window_bytes: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            enabled: true,
            min_backoff_ms: 200,
            max_backoff_ms: 60_000,
            batch: 256,
            window_records: 4096,
            window_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Backpressure at intake: how much Submit work the node takes on before it answers
/// `RESOURCE_EXHAUSTED` with a retry hint (and stores nothing of that call).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeQueue {
    /// Items of the Submit calls admitted and not yet answered (validating, waiting for the
    /// group commit, or in it). Must be at least `limits.max_submit_batch`.
    pub max_queued_records: usize,
    /// Submit calls admitted and not yet answered.
    pub max_waiting_calls: usize,
}

impl Default for IntakeQueue {
    fn default() -> Self {
        // Eight full batches: about a quarter of a second of intake at 30k records/s, so a
        // Submit waits at most that long behind others before its own group commit.
        IntakeQueue {
            max_queued_records: 8000,
            max_waiting_calls: 64,
        }
    }
}

/// Storage tuning.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreTuning {
    /// sled's page cache (`Config::cache_capacity`), the largest part of a node's memory.
    pub cache_bytes: u64,
}

impl Default for StoreTuning {
    fn default() -> Self {
        StoreTuning {
            cache_bytes: interflow_store::DEFAULT_CACHE_BYTES,
        }
    }
}

/// The smallest and largest `[store] cache_bytes` accepted: below 4 MiB sled re-reads its
/// pages from disk on every call; above 64 GiB is surely a typo.
pub const CACHE_BYTES_RANGE: std::ops::RangeInclusive<u64> = (4 << 20)..=(64 << 30);

/// Erasure of records whose agreement this node no longer has.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Records of an agreement known nowhere any more (removed from the config) are erased
    /// this many days after their issue time, so nothing is kept forever.
    pub unknown_agreement_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        // The longest retention the dev federation's agreements ask for.
        Retention {
            unknown_agreement_days: 3650,
        }
    }
}

/// Reconciliation schedule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Reconcile {
    pub interval_secs: u64,
    pub jitter_secs: u64,
    pub recover: bool,
    /// While an outbound channel is held, runs retry sooner than `interval_secs`: from this
    /// delay, doubling with jitter up to `max_backoff_ms` (and never beyond the interval).
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Stored run reports: at most this many ...
    pub keep_reports: u64,
    /// ... and none older than this.
    pub keep_reports_days: u64,
}

impl Default for Reconcile {
    fn default() -> Self {
        Reconcile {
            interval_secs: 300,
            jitter_secs: 30,
            recover: false,
            min_backoff_ms: 1000,
            max_backoff_ms: 60_000,
            keep_reports: 1000,
            keep_reports_days: 30,
        }
    }
}

impl Reconcile {
    /// How many run reports the store keeps, and for how long.
    pub fn report_retention(&self) -> interflow_store::ReportRetention {
        interflow_store::ReportRetention {
            max_count: self.keep_reports,
            max_age_ms: i64::try_from(self.keep_reports_days.saturating_mul(86_400_000))
                .unwrap_or(i64::MAX),
        }
    }
}

/// Resource limits of both listeners. Each listener (peer and local) has its own connection
/// counts and byte budgets; "identity" is the client certificate's identity (a region on the
/// peer listener, a role and holder name on the local one). See [`Limits::identity_memory_bound`]
/// for what one identity can make a listener hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_concurrent_streams: u32,
    pub max_local_error_reset_streams: usize,
    pub concurrency_per_connection: usize,
    pub request_timeout_secs: u64,
    pub max_connection_age_secs: u64,
    pub tls_handshake_timeout_ms: u64,
    pub max_pending_handshakes: usize,
    /// TLS handshakes in progress at once from one source address (IPv4, or IPv6 /64).
    pub max_handshakes_per_address: usize,
    /// A connection must send the HTTP/2 preface this soon after its TLS handshake.
    pub http2_preface_timeout_ms: u64,
    /// Open connections per listener.
    pub max_connections: usize,
    /// Open connections per certificate identity, per listener.
    pub max_connections_per_identity: usize,
    /// HTTP/2 flow-control windows the server grants: bytes a client may send on one stream,
    /// and on one connection in all, before the server has read them.
    pub http2_stream_window_bytes: u32,
    pub http2_connection_window_bytes: u32,
    /// Bytes of request messages in flight per identity, and per listener in all: each open
    /// request is charged the largest message it announced, until it ends. A request that would
    /// go over is answered RESOURCE_EXHAUSTED.
    pub max_inflight_bytes_per_identity: usize,
    pub max_inflight_bytes: usize,
    pub peer_requests_per_sec: u32,
    pub peer_burst: u32,
    /// Records a peer may deliver per second, and in one burst; more are slowed down, not
    /// refused (verification waits for the budget).
    pub peer_records_per_sec: u32,
    pub peer_records_burst: u32,
    /// Rejected records are logged once as they start, then as one summary line per peer per
    /// interval with counts by reason; the metrics count every one.
    pub reject_log_interval_secs: u64,
    pub max_future_skew_secs: u64,
    pub max_submit_batch: usize,
    pub max_fetch: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 64,
            max_local_error_reset_streams: 32,
            concurrency_per_connection: 32,
            request_timeout_secs: 30,
            max_connection_age_secs: 3600,
            tls_handshake_timeout_ms: 5000,
            max_pending_handshakes: 256,
            max_handshakes_per_address: 8,
            http2_preface_timeout_ms: 5000,
            max_connections: 256,
            max_connections_per_identity: 8,
            http2_stream_window_bytes: 256 * 1024,
            http2_connection_window_bytes: 512 * 1024,
            max_inflight_bytes_per_identity: 16 * 1024 * 1024,
            max_inflight_bytes: 128 * 1024 * 1024,
            peer_requests_per_sec: 200,
            peer_burst: 400,
            peer_records_per_sec: 2000,
            peer_records_burst: 10_000,
            reject_log_interval_secs: 60,
            max_future_skew_secs: 300,
            max_submit_batch: 1000,
            max_fetch: 1000,
        }
    }
}

/// How many bytes of memory one charged in-flight byte can stand for at most: the receive
/// buffer, which may grow to twice the largest message, and the decoded message.
pub const BYTES_PER_CHARGED_BYTE: usize = 3;

impl Limits {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The most request data one identity can make a listener hold: its charged in-flight
    /// bytes (times [`BYTES_PER_CHARGED_BYTE`]) plus, on each of its connections, what the
    /// connection window lets it send before the server reads it. Per-connection TLS and
    /// HTTP/2 state (tens of KiB) comes on top.
    pub fn identity_memory_bound(&self) -> usize {
        self.memory_bound(
            self.max_inflight_bytes_per_identity,
            self.max_connections_per_identity,
        )
    }

    /// The same for a whole listener, all identities together.
    pub fn listener_memory_bound(&self) -> usize {
        self.memory_bound(self.max_inflight_bytes, self.max_connections)
    }

    fn memory_bound(&self, inflight: usize, connections: usize) -> usize {
        inflight
            .saturating_mul(BYTES_PER_CHARGED_BYTE)
            .saturating_add(connections.saturating_mul(self.http2_connection_window_bytes as usize))
    }

    /// The accept-path limits of one listener.
    pub fn incoming(&self) -> interflow_tls::IncomingLimits {
        interflow_tls::IncomingLimits {
            handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            max_pending_handshakes: self.max_pending_handshakes,
            max_handshakes_per_address: self.max_handshakes_per_address,
            preface_timeout: Duration::from_millis(self.http2_preface_timeout_ms),
            max_connections: self.max_connections,
            max_connections_per_identity: self.max_connections_per_identity,
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let positive = [
            ("limits.max_submit_batch", self.max_submit_batch as u64),
            ("limits.max_fetch", u64::from(self.max_fetch)),
            (
                "limits.peer_requests_per_sec",
                u64::from(self.peer_requests_per_sec),
            ),
            ("limits.peer_burst", u64::from(self.peer_burst)),
            (
                "limits.peer_records_per_sec",
                u64::from(self.peer_records_per_sec),
            ),
            (
                "limits.peer_records_burst",
                u64::from(self.peer_records_burst),
            ),
            (
                "limits.reject_log_interval_secs",
                self.reject_log_interval_secs,
            ),
            (
                "limits.max_pending_handshakes",
                self.max_pending_handshakes as u64,
            ),
            (
                "limits.max_handshakes_per_address",
                self.max_handshakes_per_address as u64,
            ),
            (
                "limits.tls_handshake_timeout_ms",
                self.tls_handshake_timeout_ms,
            ),
            (
                "limits.http2_preface_timeout_ms",
                self.http2_preface_timeout_ms,
            ),
            ("limits.max_connections", self.max_connections as u64),
            (
                "limits.max_connections_per_identity",
                self.max_connections_per_identity as u64,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        // HTTP/2 allows windows from 65535 bytes (the protocol default) up to 2^31 - 1.
        for (key, v) in [
            (
                "limits.http2_stream_window_bytes",
                self.http2_stream_window_bytes,
            ),
            (
                "limits.http2_connection_window_bytes",
                self.http2_connection_window_bytes,
            ),
        ] {
            if !(65_535..=0x7fff_ffff).contains(&v) {
                return Err(invalid(key, "must be between 65535 and 2147483647"));
            }
        }
        if self.http2_connection_window_bytes < self.http2_stream_window_bytes {
            return Err(invalid(
                "limits.http2_connection_window_bytes",
                "must be at least http2_stream_window_bytes",
            ));
        }
        // A message of the largest size, with its 5-byte gRPC prefix, must fit in a budget.
        let one = self.max_message_bytes.saturating_add(5);
        if self.max_inflight_bytes_per_identity < one {
            return Err(invalid(
                "limits.max_inflight_bytes_per_identity",
                format!("must be at least max_message_bytes + 5 ({one})"),
            ));
        }
        if self.max_inflight_bytes < self.max_inflight_bytes_per_identity {
            return Err(invalid(
                "limits.max_inflight_bytes",
                "must be at least max_inflight_bytes_per_identity",
            ));
        }
        Ok(())
    }
}

/// TLS files of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crls: Vec<PathBuf>,
}

/// A validated configuration with absolute paths.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub region: RegionCode,
    pub name: String,
    pub data_dir: PathBuf,
    pub peer_listen: SocketAddr,
    pub local_listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub signing_key: PathBuf,
    /// `[keys] master_key`; [`MASTER_KEY_ENV`] overrides it at start.
    pub master_key: Option<PathBuf>,
    pub peer_tls: TlsPaths,
    pub local_tls: TlsPaths,
    pub directory: PathBuf,
    pub operator_key: PathBuf,
    pub agreements: Vec<PathBuf>,
    /// `[federation] termination_grace_days`.
    pub termination_grace_days: u32,
    /// `[federation] watch_interval_ms`: `None` when 0 (no watching, SIGHUP only).
    pub watch_interval: Option<std::time::Duration>,
    pub pseudonym_keys: Vec<PseudonymKeyFile>,
    pub delivery: Delivery,
    pub reconcile: Reconcile,
    pub limits: Limits,
    pub retention: Retention,
    /// `[intake]`: backpressure to submitters.
    pub intake: IntakeQueue,
    /// `[store]`: the sled page cache.
    pub store: StoreTuning,
}

/// Key material, directory and agreements, loaded and verified.
#[derive(Debug)]
pub struct Material {
    pub signing_key: keys::RecordSigningKey,
    pub directory: Directory,
    /// The directory as the operator signed it: served to peers and persisted.
    pub signed_directory: pb::SignedDirectory,
    pub agreements: AgreementSet,
    pub pseudonym_keys: HashMap<String, EpochKeys>,
}

fn addr(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        invalid(
            key,
            format!("`{s}` is not an address like `127.0.0.1:7444`"),
        )
    })
}

fn must_exist(key: impl Into<String>, p: &Path) -> Result<(), ConfigError> {
    if p.exists() {
        Ok(())
    } else {
        Err(ConfigError::MissingFile {
            key: key.into(),
            path: p.to_owned(),
        })
    }
}

/// The `[[pseudonym_keys]]` entries with absolute paths: epochs count from 1 and an agreement
/// lists each epoch once.
fn pseudonym_key_files(
    raw: &[RawPseudonymKey],
    abs: impl Fn(&Path) -> PathBuf,
) -> Result<Vec<PseudonymKeyFile>, ConfigError> {
    let mut seen = std::collections::HashSet::new();
    raw.iter()
        .map(|k| {
            let epoch = Epoch::new(k.epoch).map_err(|e| {
                invalid(
                    "pseudonym_keys.epoch",
                    format!("agreement `{}`: {e}", k.agreement),
                )
            })?;
            if !seen.insert((k.agreement.as_str(), epoch)) {
                return Err(invalid(
                    "pseudonym_keys.epoch",
                    format!(
                        "agreement `{}` lists epoch {epoch} twice; give each key of an agreement its own epoch (a rotation adds the next one)",
                        k.agreement
                    ),
                ));
            }
            Ok(PseudonymKeyFile {
                agreement: k.agreement.clone(),
                epoch,
                path: abs(&k.key_file),
            })
        })
        .collect()
}

impl Config {
    /// The files a reload reads: the config file itself and every file it names for
    /// certificates, CRLs, the directory, agreements and keys.
    pub fn reload_inputs(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.path.clone(),
            self.signing_key.clone(),
            self.directory.clone(),
            self.operator_key.clone(),
        ];
        for t in [&self.peer_tls, &self.local_tls] {
            files.extend([t.ca.clone(), t.cert.clone(), t.key.clone()]);
            files.extend(t.crls.iter().cloned());
        }
        files.extend(self.agreements.iter().cloned());
        files.extend(self.pseudonym_keys.iter().map(|k| k.path.clone()));
        files
    }

    /// Reads and validates a config file; every named file must exist.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates config text as if read from `path` (relative paths resolve against its dir).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        if raw.version != CONFIG_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "`{}` is not supported; this build reads version {CONFIG_VERSION}",
                    raw.version
                ),
            ));
        }
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let region: RegionCode =
            raw.region
                .parse()
                .map_err(|e: interflow_core::region::RegionCodeError| {
                    invalid("region", e.to_string())
                })?;
        let local = raw
            .local
            .map(|l| l.listen)
            .unwrap_or_else(|| "127.0.0.1:7444".into());
        let d = &raw.delivery;
        if d.min_backoff_ms == 0 || d.max_backoff_ms < d.min_backoff_ms {
            return Err(invalid(
                "delivery.max_backoff_ms",
                "must be at least min_backoff_ms, which must be positive",
            ));
        }
        if d.batch == 0 {
            return Err(invalid("delivery.batch", "must be positive"));
        }
        if d.window_records == 0 || d.window_bytes == 0 {
            return Err(invalid(
                "delivery.window_records",
                "window_records and window_bytes must be positive",
            ));
        }
        if raw.reconcile.interval_secs == 0 {
            return Err(invalid("reconcile.interval_secs", "must be positive"));
        }
        let r = &raw.reconcile;
        if r.min_backoff_ms == 0 || r.max_backoff_ms < r.min_backoff_ms {
            return Err(invalid(
                "reconcile.max_backoff_ms",
                "must be at least min_backoff_ms, which must be positive",
            ));
        }
        if r.keep_reports == 0 || r.keep_reports_days == 0 {
            return Err(invalid(
                "reconcile.keep_reports",
                "keep_reports and keep_reports_days must be positive",
            ));
        }
        raw.limits.check()?;
        if raw.retention.unknown_agreement_days == 0 {
            return Err(invalid(
                "retention.unknown_agreement_days",
                "must be at least 1",
            ));
        }
        let q = &raw.intake;
        if q.max_waiting_calls == 0 {
            return Err(invalid("intake.max_waiting_calls", "must be positive"));
        }
        if q.max_queued_records < raw.limits.max_submit_batch {
            return Err(invalid(
                "intake.max_queued_records",
                format!(
                    "must be at least limits.max_submit_batch ({}), or a full batch could never be taken",
                    raw.limits.max_submit_batch
                ),
            ));
        }
        if !CACHE_BYTES_RANGE.contains(&raw.store.cache_bytes) {
            return Err(invalid(
                "store.cache_bytes",
                format!(
                    "must be between {} (4 MiB) and {} (64 GiB)",
                    CACHE_BYTES_RANGE.start(),
                    CACHE_BYTES_RANGE.end()
                ),
            ));
        }
        let cfg = Config {
            path: path.to_owned(),
            region,
            name: raw.name,
            data_dir: abs(&raw.data_dir),
            peer_listen: addr("peer.listen", &raw.peer.listen)?,
            local_listen: addr("local.listen", &local)?,
            metrics_listen: raw
                .metrics
                .map(|m| addr("metrics.listen", &m.listen))
                .transpose()?,
            signing_key: abs(&raw.keys.signing_key),
            master_key: raw.keys.master_key.as_deref().map(abs),
            peer_tls: TlsPaths {
                ca: abs(&raw.tls.federation_ca),
                cert: abs(&raw.tls.cert),
                key: abs(&raw.tls.key),
                crls: raw.tls.crls.iter().map(|p| abs(p)).collect(),
            },
            local_tls: TlsPaths {
                ca: abs(&raw.tls.local_ca),
                cert: abs(&raw.tls.local_cert),
                key: abs(&raw.tls.local_key),
                crls: raw.tls.local_crls.iter().map(|p| abs(p)).collect(),
            },
            directory: abs(&raw.federation.directory),
            operator_key: abs(&raw.federation.operator_key),
            agreements: raw.federation.agreements.iter().map(|p| abs(p)).collect(),
            termination_grace_days: raw.federation.termination_grace_days,
            watch_interval: (raw.federation.watch_interval_ms > 0)
                .then(|| std::time::Duration::from_millis(raw.federation.watch_interval_ms)),
            pseudonym_keys: pseudonym_key_files(&raw.pseudonym_keys, abs)?,
            delivery: raw.delivery,
            reconcile: raw.reconcile,
            limits: raw.limits,
            retention: raw.retention,
            intake: raw.intake,
            store: raw.store,
        };
        cfg.check_files()?;
        Ok(cfg)
    }

    fn check_files(&self) -> Result<(), ConfigError> {
        must_exist("keys.signing_key", &self.signing_key)?;
        for (key, t) in [("tls", &self.peer_tls), ("tls.local", &self.local_tls)] {
            must_exist(format!("{key} ca"), &t.ca)?;
            must_exist(format!("{key} cert"), &t.cert)?;
            must_exist(format!("{key} key"), &t.key)?;
            for c in &t.crls {
                must_exist(format!("{key} crls"), c)?;
            }
        }
        must_exist("federation.directory", &self.directory)?;
        must_exist("federation.operator_key", &self.operator_key)?;
        for a in &self.agreements {
            must_exist("federation.agreements", a)?;
        }
        for k in &self.pseudonym_keys {
            must_exist("pseudonym_keys.key_file", &k.path)?;
        }
        Ok(())
    }

    /// Loads and verifies keys, the directory and the agreements. Every agreement must name
    /// this node as a party and have a pseudonym key.
    pub fn load_material(&self) -> Result<Material, ConfigError> {
        let bad = |key: &str, path: &Path, reason: String| ConfigError::BadFile {
            key: key.into(),
            path: path.to_owned(),
            reason,
        };
        let signing_key = keys::load_record_signing_key(&self.signing_key)
            .map_err(|e| bad("keys.signing_key", &self.signing_key, e.to_string()))?;
        let operator = keys::load_verifying_key(&self.operator_key)
            .map_err(|e| bad("federation.operator_key", &self.operator_key, e.to_string()))?;
        let read = |key: &str, p: &Path| std::fs::read(p).map_err(|e| bad(key, p, e.to_string()));
        let dir_bytes = read("federation.directory", &self.directory)?;
        let signed_dir = pb::SignedDirectory::decode(dir_bytes.as_slice()).map_err(|e| {
            bad(
                "federation.directory",
                &self.directory,
                format!("not a SignedDirectory: {e}"),
            )
        })?;
        let directory = Directory::verify(&signed_dir, &operator)
            .map_err(|e| bad("federation.directory", &self.directory, e.to_string()))?;
        let me = directory.member(self.region).ok_or_else(|| {
            bad(
                "region",
                &self.directory,
                format!("region `{}` is not a member of the directory", self.region),
            )
        })?;
        // Whether it is valid now is checked where the clock is (`NodeSigner::find`).
        let public = signing_key.public_key();
        if !me.keys.iter().any(|k| k.public_key == public) {
            return Err(bad(
                "keys.signing_key",
                &self.signing_key,
                "is not among this region's record-signing keys in the directory".into(),
            ));
        }
        let mut agreements = Vec::new();
        for p in &self.agreements {
            let bytes = read("federation.agreements", p)?;
            let signed = pb::SignedAgreement::decode(bytes.as_slice()).map_err(|e| {
                bad(
                    "federation.agreements",
                    p,
                    format!("not a SignedAgreement: {e}"),
                )
            })?;
            let a = Agreement::verify(signed, &directory)
                .map_err(|e| bad("federation.agreements", p, e.to_string()))?;
            if a.peer_of(self.region).is_none() {
                return Err(bad(
                    "federation.agreements",
                    p,
                    format!("this node (`{}`) is not a party", self.region),
                ));
            }
            agreements.push(a);
        }
        let mut by_agreement: HashMap<String, Vec<(Epoch, PseudonymKey)>> = HashMap::new();
        for k in &self.pseudonym_keys {
            let key = keys::load_pseudonym_key(&k.path)
                .map_err(|e| bad("pseudonym_keys.key_file", &k.path, e.to_string()))?;
            by_agreement
                .entry(k.agreement.clone())
                .or_default()
                .push((k.epoch, key));
        }
        let mut pseudonym_keys = HashMap::new();
        for (id, keys) in by_agreement {
            // Distinct epochs were checked when parsing, so this cannot fail here.
            let keys = EpochKeys::new(keys)
                .map_err(|e| invalid("pseudonym_keys", format!("agreement `{id}`: {e}")))?;
            pseudonym_keys.insert(id, keys);
        }
        for a in &agreements {
            if !pseudonym_keys.contains_key(&a.id) {
                return Err(invalid(
                    "pseudonym_keys",
                    format!(
                        "agreement `{}` has no pseudonym key; add a [[pseudonym_keys]] entry",
                        a.id
                    ),
                ));
            }
        }
        Ok(Material {
            signing_key,
            directory,
            signed_directory: signed_dir,
            agreements: AgreementSet::new(agreements),
            pseudonym_keys,
        })
    }
}

/// A commented starter config for `interflow init`.
pub fn starter(region: RegionCode) -> String {
    // The example is Pudong's (310115) with an agreement with 110105: the name becomes a
    // placeholder and the agreement one with another region, never with itself.
    const EXAMPLE_PEER: &str = "110105";
    let peer = if region.as_str() == EXAMPLE_PEER {
        "310115"
    } else {
        EXAMPLE_PEER
    };
    include_str!("../../../deploy/examples/interflow.toml")
        .replace(
            "Pudong New Area Health Bureau",
            "Health Bureau of region @REGION@ (edit: the bureau's name)",
        )
        .replace("agr-310115-110105", "agr-@REGION@-@PEER@")
        .replace("310115", "@REGION@")
        .replace("@PEER@", peer)
        .replace("@REGION@", region.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_files(dir: &Path) {
        for f in [
            "keys/signing.pem",
            "tls/federation-ca.pem",
            "tls/node.pem",
            "tls/node.key",
            "tls/local-ca.pem",
            "tls/local-server.pem",
            "tls/local-server.key",
            "federation/directory.pb",
            "federation/operator.pub.pem",
            "agreements/agr-310115-110105.pb",
            "agreements/agr-310115-110105.key",
        ] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
    }

    #[test]
    fn the_example_config_parses_with_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path());
        let path = dir.path().join("interflow.toml");
        let cfg = Config::parse(&path, &starter("310115".parse().unwrap())).unwrap();
        assert_eq!(cfg.region.as_str(), "310115");
        assert_eq!(cfg.signing_key, dir.path().join("keys/signing.pem"));
        assert_eq!(cfg.local_listen.to_string(), "127.0.0.1:7444");
        assert_eq!(cfg.limits, Limits::default());
        assert_eq!(cfg.delivery, Delivery::default());
        assert_eq!(cfg.intake, IntakeQueue::default());
        assert_eq!(cfg.store, StoreTuning::default());
    }

    #[test]
    fn intake_bounds_and_cache_sizes_that_cannot_work_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path());
        let path = dir.path().join("interflow.toml");
        for (from, to, key) in [
            (
                "max_queued_records = 8000",
                "max_queued_records = 999",
                "intake.max_queued_records",
            ),
            (
                "max_waiting_calls = 64",
                "max_waiting_calls = 0",
                "intake.max_waiting_calls",
            ),
            (
                "cache_bytes = 67108864",
                "cache_bytes = 1048576",
                "store.cache_bytes",
            ),
        ] {
            let text = starter("310115".parse().unwrap());
            assert!(text.contains(from), "the example config sets `{from}`");
            let err = Config::parse(&path, &text.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn an_empty_delivery_window_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path());
        let path = dir.path().join("interflow.toml");
        for (from, to) in [
            ("window_records = 4096", "window_records = 0"),
            ("window_bytes = 4194304", "window_bytes = 0"),
        ] {
            let text = starter("310115".parse().unwrap()).replace(from, to);
            let err = Config::parse(&path, &text).unwrap_err().to_string();
            assert!(err.contains("window_records"), "{err}");
        }
    }

    #[test]
    fn the_starter_names_the_region_and_an_agreement_with_another_region() {
        for (region, agreement) in [
            ("440305", "agr-440305-110105"),
            ("110105", "agr-110105-310115"),
            ("310115", "agr-310115-110105"),
        ] {
            let text = starter(region.parse().unwrap());
            assert!(!text.contains("Pudong"), "{text}");
            assert!(
                text.contains(&format!("Health Bureau of region {region}")),
                "{text}"
            );
            assert!(
                text.contains(&format!("agreement = \"{agreement}\"")),
                "{region}: {text}"
            );
            assert!(!text.contains(&format!("agr-{region}-{region}")), "{text}");
        }
    }

    #[test]
    fn records_of_unknown_agreements_have_a_default_retention_that_is_never_zero() {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path());
        let path = dir.path().join("interflow.toml");
        let text = starter("310115".parse().unwrap());
        let cfg = Config::parse(&path, &text).unwrap();
        assert_eq!(cfg.retention.unknown_agreement_days, 3650);
        let zero = text.replace(
            "unknown_agreement_days = 3650",
            "unknown_agreement_days = 0",
        );
        let err = Config::parse(&path, &zero).unwrap_err().to_string();
        assert!(err.contains("unknown_agreement_days"), "{err}");
    }

    #[test]
    fn unknown_keys_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path());
        let path = dir.path().join("interflow.toml");
        let text = starter("310115".parse().unwrap())
            .replace("[limits]", "[limits]\nmax_mesage_bytes = 1");
        let err = Config::parse(&path, &text).unwrap_err().to_string();
        assert!(err.contains("max_mesage_bytes"), "{err}");
        std::fs::remove_file(dir.path().join("tls/node.key")).unwrap();
        let err = Config::parse(&path, &starter("310115".parse().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("node.key"), "{err}");
        let err = Config::parse(
            &path,
            &starter("310115".parse().unwrap()).replace("version = 1", "version = 2"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("version"), "{err}");
    }

    /// The starter with `extra` `[[pseudonym_keys]]` entries for its agreement (key files made).
    fn with_epochs(dir: &Path, extra: &[&str]) -> Result<Config, ConfigError> {
        write_files(dir);
        let mut text = starter("310115".parse().unwrap());
        for (i, e) in extra.iter().enumerate() {
            let file = format!("agreements/epoch-{i}.key");
            std::fs::write(dir.join(&file), "x").unwrap();
            text.push_str(&format!(
                "\n[[pseudonym_keys]]\nagreement = \"agr-310115-110105\"\n{e}\nkey_file = \"{file}\"\n"
            ));
        }
        Config::parse(&dir.join("interflow.toml"), &text)
    }

    #[test]
    fn pseudonym_keys_have_epochs_that_default_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let one = with_epochs(dir.path(), &[]).unwrap();
        assert_eq!(one.pseudonym_keys.len(), 1);
        assert_eq!(one.pseudonym_keys[0].epoch, Epoch::FIRST);
        // An entry written before epochs existed (no `epoch`) is epoch 1.
        let text = starter("310115".parse().unwrap()).replace("epoch = 1\n", "");
        assert!(!text.contains("epoch ="), "{text}");
        let old = Config::parse(&dir.path().join("interflow.toml"), &text).unwrap();
        assert_eq!(old.pseudonym_keys, one.pseudonym_keys);
        let rotated = with_epochs(dir.path(), &["epoch = 3", "epoch = 2"]).unwrap();
        let epochs: Vec<u32> = rotated
            .pseudonym_keys
            .iter()
            .map(|k| k.epoch.get())
            .collect();
        assert_eq!(epochs, vec![1, 3, 2]);
        assert_eq!(
            rotated.pseudonym_keys[1].path,
            dir.path().join("agreements/epoch-0.key")
        );
    }

    #[test]
    fn a_duplicate_epoch_or_epoch_zero_is_refused_with_the_agreement_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = with_epochs(dir.path(), &["epoch = 2", "epoch = 2"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config key `pseudonym_keys.epoch`: agreement `agr-310115-110105` lists epoch 2 twice; give each key of an agreement its own epoch (a rotation adds the next one)"
        );
        // A second entry without `epoch` is epoch 1 again.
        let err = with_epochs(dir.path(), &[""]).unwrap_err().to_string();
        assert!(err.contains("lists epoch 1 twice"), "{err}");
        let err = with_epochs(dir.path(), &["epoch = 0"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config key `pseudonym_keys.epoch`: agreement `agr-310115-110105`: pseudonym epoch `0` does not exist; epochs count from 1"
        );
        // The same epoch under two agreements is fine.
        let mut text = starter("310115".parse().unwrap());
        text.push_str("\n[[pseudonym_keys]]\nagreement = \"agr-other\"\nkey_file = \"agreements/agr-310115-110105.key\"\n");
        Config::parse(&dir.path().join("interflow.toml"), &text).unwrap();
    }

    #[test]
    fn what_one_peer_can_pin_follows_from_the_limits() {
        let l = Limits::default();
        const MIB: usize = 1024 * 1024;
        // The documented figures (deploy/examples/interflow.toml, deploy/README.md).
        assert_eq!(l.identity_memory_bound(), 52 * MIB);
        assert_eq!(l.listener_memory_bound(), 512 * MIB);
        // Each term is its own limit: doubling one raises the bound by exactly its share.
        let more_conns = Limits {
            max_connections_per_identity: 16,
            ..l.clone()
        };
        assert_eq!(
            more_conns.identity_memory_bound() - l.identity_memory_bound(),
            8 * l.http2_connection_window_bytes as usize
        );
        let more_bytes = Limits {
            max_inflight_bytes_per_identity: 32 * MIB,
            ..l.clone()
        };
        assert_eq!(
            more_bytes.identity_memory_bound() - l.identity_memory_bound(),
            BYTES_PER_CHARGED_BYTE * 16 * MIB
        );
        // The bound no longer grows with the streams or messages a peer sends: it does not
        // depend on the stream and message limits at all.
        let more_streams = Limits {
            max_concurrent_streams: 1000,
            concurrency_per_connection: 1000,
            ..l.clone()
        };
        assert_eq!(
            more_streams.identity_memory_bound(),
            l.identity_memory_bound()
        );
        // The accept path gets the same numbers.
        let incoming = l.incoming();
        assert_eq!(
            incoming.max_connections_per_identity,
            l.max_connections_per_identity
        );
        assert_eq!(
            incoming.max_handshakes_per_address,
            l.max_handshakes_per_address
        );
        assert_eq!(incoming.preface_timeout, Duration::from_millis(5000));
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path());
        let path = dir.path().join("interflow.toml");
        let with = |line: &str| {
            let text = starter("310115".parse().unwrap())
                .replace("[limits]\n", &format!("[limits]\n{line}\n"));
            // The starter already has the key: drop its own line.
            let key = line.split(' ').next().unwrap();
            let mut seen = false;
            let text: String = text
                .lines()
                .filter(|l| {
                    if l.starts_with(&format!("{key} =")) {
                        if seen {
                            return false;
                        }
                        seen = true;
                    }
                    true
                })
                .map(|l| format!("{l}\n"))
                .collect();
            Config::parse(&path, &text)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(with("max_connections_per_identity = 4"), Ok(()));
        for (line, key) in [
            (
                "max_connections_per_identity = 0",
                "max_connections_per_identity",
            ),
            (
                "max_handshakes_per_address = 0",
                "max_handshakes_per_address",
            ),
            ("http2_preface_timeout_ms = 0", "http2_preface_timeout_ms"),
            ("peer_records_per_sec = 0", "peer_records_per_sec"),
            (
                "http2_stream_window_bytes = 1000",
                "http2_stream_window_bytes",
            ),
            (
                "http2_connection_window_bytes = 65535",
                "http2_connection_window_bytes",
            ),
            (
                "max_inflight_bytes_per_identity = 4194308",
                "max_inflight_bytes_per_identity",
            ),
            ("max_inflight_bytes = 1048576", "max_inflight_bytes"),
        ] {
            let err = with(line).expect_err(line);
            assert!(err.contains(key), "{line}: {err}");
        }
    }
}
