//! Reaching a node's local listener: which address, CA, client certificate and key to use, and
//! the mutual TLS connection itself.
//!
//! Settings come from flags, the environment, or one file source (a node config file or the
//! dev federation's `federation.json`); [`merge`] applies the precedence flag > env > file in
//! one place and remembers where each value came from, so a failed connection can say which
//! file it tried and how that was chosen. This module never reads the node's data directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use interflow_core::RegionCode;
use interflow_core::pb::admin_client::AdminClient;
use interflow_core::pb::inbox_client::InboxClient;
use interflow_core::pb::intake_client::IntakeClient;
use interflow_tls::Role;
use serde::Deserialize;
use tonic::transport::Channel;

use crate::cli::ConnArgs;

/// Largest response the CLI accepts (a long timeline, a big audit page).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The local listener's default address, as the node uses when `[local]` is absent.
const DEFAULT_LOCAL_LISTEN: &str = "127.0.0.1:7444";

/// A setting and where it came from, e.g. `--cert` or `config `/etc/interflow.toml``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub from: String,
}

/// Settings from one source; any may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    pub addr: Option<Sourced<String>>,
    pub ca: Option<Sourced<PathBuf>>,
    pub cert: Option<Sourced<PathBuf>>,
    pub key: Option<Sourced<PathBuf>>,
    pub region: Option<Sourced<String>>,
}

/// Everything needed to connect, with the origin of each value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: Sourced<String>,
    pub ca: Sourced<PathBuf>,
    pub cert: Sourced<PathBuf>,
    pub key: Sourced<PathBuf>,
    pub region: Sourced<RegionCode>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node `{}` at `{}`", self.region.value, self.addr.value)
    }
}

fn sourced<T>(value: Option<T>, from: &str) -> Option<Sourced<T>> {
    value.map(|value| Sourced {
        value,
        from: from.to_owned(),
    })
}

impl Partial {
    /// From command-line flags.
    pub fn from_flags(args: &ConnArgs) -> Partial {
        Partial {
            addr: sourced(args.addr.clone(), "--addr"),
            ca: sourced(args.ca.clone(), "--ca"),
            cert: sourced(args.cert.clone(), "--cert"),
            key: sourced(args.key.clone(), "--key"),
            region: sourced(args.region.clone(), "--region"),
        }
    }

    /// From `INTERFLOW_*` variables, read through `get` (empty values count as unset).
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Partial {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        Partial {
            addr: sourced(var("INTERFLOW_ADDR"), "INTERFLOW_ADDR"),
            ca: sourced(var("INTERFLOW_CA").map(PathBuf::from), "INTERFLOW_CA"),
            cert: sourced(var("INTERFLOW_CERT").map(PathBuf::from), "INTERFLOW_CERT"),
            key: sourced(var("INTERFLOW_KEY").map(PathBuf::from), "INTERFLOW_KEY"),
            region: sourced(var("INTERFLOW_REGION"), "INTERFLOW_REGION"),
        }
    }

    /// From a node config file: `region`, `local.listen`, `tls.local_ca` and the `[client]`
    /// certificate of `role`. Relative paths resolve against the file's directory.
    pub fn from_config(path: &Path, role: Role) -> anyhow::Result<Partial> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading node config `{}`", path.display()))?;
        let cfg: ConfigView = toml::from_str(&text).with_context(|| {
            format!(
                "parsing node config `{}`; it must be the node's TOML config",
                path.display()
            )
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let from = |key: &str| format!("`{key}` in `{}`", path.display());
        let listen = cfg
            .local
            .and_then(|l| l.listen)
            .unwrap_or_else(|| DEFAULT_LOCAL_LISTEN.to_owned());
        let client = cfg.client.unwrap_or_default();
        let (cert, key, cert_key, key_key) = match role {
            Role::Admin => (
                client.admin_cert,
                client.admin_key,
                "client.admin_cert",
                "client.admin_key",
            ),
            Role::Intake => (
                client.intake_cert,
                client.intake_key,
                "client.intake_cert",
                "client.intake_key",
            ),
            Role::Inbox => (
                client.inbox_cert,
                client.inbox_key,
                "client.inbox_cert",
                "client.inbox_key",
            ),
        };
        Ok(Partial {
            addr: sourced(Some(dialable(&listen)), &from("local.listen")),
            ca: sourced(
                cfg.tls.and_then(|t| t.local_ca).map(abs),
                &from("tls.local_ca"),
            ),
            cert: sourced(cert.map(abs), &from(cert_key)),
            key: sourced(key.map(abs), &from(key_key)),
            region: sourced(cfg.region, &from("region")),
        })
    }

    /// From the dev federation's `federation.json` in `dir`, for the node `code`.
    pub fn from_dev(dir: &Path, code: &str, role: Role) -> anyhow::Result<Partial> {
        let path = dir.join("federation.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading `{}`; start a dev federation with `interflow dev` or pass --dev-dir",
                path.display()
            )
        })?;
        let fed: DevFederationView = serde_json::from_str(&text)
            .with_context(|| format!("parsing dev federation `{}`", path.display()))?;
        let Some(node) = fed.nodes.iter().find(|n| n.region == code) else {
            let known: Vec<&str> = fed.nodes.iter().map(|n| n.region.as_str()).collect();
            bail!(
                "the dev federation in `{}` has no node `{code}`; its nodes are {}",
                dir.display(),
                known.join(", ")
            );
        };
        let from = format!("--dev-node {code} (`{}`)", path.display());
        let (cert, key) = match role {
            Role::Admin => (&node.admin_cert, &node.admin_key),
            Role::Intake => (&node.intake_cert, &node.intake_key),
            Role::Inbox => (&node.inbox_cert, &node.inbox_key),
        };
        Ok(Partial {
            addr: sourced(Some(dialable(&node.local_addr)), &from),
            ca: sourced(Some(dev_path(dir, &node.local_ca)), &from),
            cert: sourced(Some(dev_path(dir, cert)), &from),
            key: sourced(Some(dev_path(dir, key)), &from),
            region: sourced(Some(node.region.clone()), &from),
        })
    }
}

/// What `interflowctl` reads of a node config; every other key is ignored.
#[derive(Debug, Deserialize)]
struct ConfigView {
    region: Option<String>,
    local: Option<LocalView>,
    tls: Option<TlsView>,
    client: Option<ClientView>,
}

#[derive(Debug, Deserialize)]
struct LocalView {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TlsView {
    local_ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
struct ClientView {
    admin_cert: Option<PathBuf>,
    admin_key: Option<PathBuf>,
    intake_cert: Option<PathBuf>,
    intake_key: Option<PathBuf>,
    inbox_cert: Option<PathBuf>,
    inbox_key: Option<PathBuf>,
}

/// What `interflowctl` reads of `federation.json`; other keys are ignored.
#[derive(Debug, Deserialize)]
struct DevFederationView {
    nodes: Vec<DevNodeView>,
}

#[derive(Debug, Deserialize)]
struct DevNodeView {
    region: String,
    local_addr: String,
    local_ca: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    intake_cert: PathBuf,
    intake_key: PathBuf,
    inbox_cert: PathBuf,
    inbox_key: PathBuf,
}

/// A relative path in `federation.json` names a file under the dev directory; if it does not
/// exist there, it is taken relative to the working directory (where `interflow dev` ran).
fn dev_path(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_owned();
    }
    let under = dir.join(p);
    if under.exists() || !p.exists() {
        under
    } else {
        p.to_owned()
    }
}

/// A listen address turned into one to dial: the wildcard addresses mean "this machine".
fn dialable(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_owned()
    }
}

/// Applies the precedence flag > env > file, and names every missing setting with how to give
/// it.
pub fn merge(flags: Partial, env: Partial, file: Partial) -> anyhow::Result<Target> {
    fn pick<T>(a: Option<T>, b: Option<T>, c: Option<T>) -> Option<T> {
        a.or(b).or(c)
    }
    let addr = pick(flags.addr, env.addr, file.addr);
    let ca = pick(flags.ca, env.ca, file.ca);
    let cert = pick(flags.cert, env.cert, file.cert);
    let key = pick(flags.key, env.key, file.key);
    let region = pick(flags.region, env.region, file.region);
    let mut missing = Vec::new();
    let mut need = |present: bool, what: &str, flag: &str, var: &str| {
        if !present {
            missing.push(format!("{what} ({flag} or {var})"));
        }
    };
    need(
        addr.is_some(),
        "the local listener address",
        "--addr",
        "INTERFLOW_ADDR",
    );
    need(ca.is_some(), "the node's local CA", "--ca", "INTERFLOW_CA");
    need(
        cert.is_some(),
        "a client certificate",
        "--cert",
        "INTERFLOW_CERT",
    );
    need(key.is_some(), "its private key", "--key", "INTERFLOW_KEY");
    need(
        region.is_some(),
        "the node's region code",
        "--region",
        "INTERFLOW_REGION",
    );
    match (addr, ca, cert, key, region) {
        (Some(addr), Some(ca), Some(cert), Some(key), Some(region)) => {
            let code = region.value.parse::<RegionCode>().with_context(|| {
                format!("region `{}` from {} is invalid", region.value, region.from)
            })?;
            Ok(Target {
                addr,
                ca,
                cert,
                key,
                region: Sourced {
                    value: code,
                    from: region.from,
                },
            })
        }
        _ => bail!(
            "missing connection settings: {}; or use --config <node config> or --dev-node <code>",
            missing.join(", ")
        ),
    }
}

/// Resolves the connection settings for a command that needs `role`.
pub fn resolve(
    args: &ConnArgs,
    role: Role,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Target> {
    let file = match (&args.config, &args.dev_node) {
        (Some(path), _) => Partial::from_config(path, role)?,
        (None, Some(code)) => Partial::from_dev(&args.dev_dir, code, role)?,
        (None, None) => Partial::default(),
    };
    merge(Partial::from_flags(args), Partial::from_env(env), file)
}

/// How long one request may take by default; `reconcile` streams are not bounded.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An open connection to a node's local listener.
#[derive(Debug, Clone)]
pub struct Connection {
    channel: Channel,
    /// Says which node, for error messages.
    describe: String,
    /// Says which client certificate, for error messages about it: `` `path` (from …)``
    /// after a space, or empty.
    cert: String,
    request_timeout: Duration,
}

impl Connection {
    /// Wraps a channel someone else opened (tests); `describe` names it in errors.
    pub fn new(channel: Channel, describe: impl Into<String>) -> Self {
        Connection {
            channel,
            describe: describe.into(),
            cert: String::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The bound on each request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The same connection with another bound on each request.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Awaits one unary call under the request timeout, with errors that say what to check.
    pub async fn unary<T>(
        &self,
        call: &str,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(self.call_error(call, status)),
            Err(_) => Err(anyhow!(
                "`{call}` got no answer from {} within {}; the node may be overloaded or stuck: check its log, or raise --timeout",
                self.describe,
                crate::human::format_age(self.request_timeout)
            )),
        }
    }

    /// Connects to `target` over mutual TLS; requests are bounded by
    /// [`DEFAULT_REQUEST_TIMEOUT`] until [`Connection::with_request_timeout`].
    pub async fn open(target: &Target, timeout: Duration) -> anyhow::Result<Connection> {
        let (ca, cert, key) = (
            target.ca.value.clone(),
            target.cert.value.clone(),
            target.key.value.clone(),
        );
        let config = tokio::task::spawn_blocking(move || {
            interflow_tls::client_config(&ca, &cert, &key)
        })
        .await
        .context("loading tls material")?
        .map_err(|e| {
            // The error names the file; say where that file was chosen, once.
            let chain = error_chain(&e);
            let from = [&target.ca, &target.cert, &target.key]
                .into_iter()
                .find(|s| chain.contains(&s.value.display().to_string()))
                .map(|s| format!(" (the path is from {})", s.from))
                .unwrap_or_default();
            anyhow!(
                "loading the tls files to reach {target}: {chain}{from}; check that the CA, certificate and key files exist, are PEM, and that the key belongs to the certificate"
            )
        })?;
        let server_name = interflow_tls::local_server_name(target.region.value);
        let channel = interflow_tls::connect(&target.addr.value, &server_name, config, timeout)
            .await
            .map_err(|e| connect_error(target, &e))?;
        let mut conn = Connection::new(channel, target.to_string());
        conn.cert = format!(
            " `{}` (from {})",
            target.cert.value.display(),
            target.cert.from
        );
        Ok(conn)
    }

    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn intake(&self) -> IntakeClient<Channel> {
        IntakeClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn inbox(&self) -> InboxClient<Channel> {
        InboxClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// An error for a failed call, with what to check for the common causes; a [`CallError`]
    /// inside, so callers can tell whether trying again could help.
    pub fn call_error(&self, call: &str, status: tonic::Status) -> anyhow::Error {
        use tonic::Code;
        let msg = status.message();
        let refused = refused_certificate(&status);
        let hint = match status.code() {
            // With TLS 1.3 the node checks the client certificate after the client has
            // finished its handshake, so a refusal shows only on the first call: as the
            // alert, or as a connection the node closed.
            _ if refused.is_some() => format!(
                "; {} refused the client certificate{} during or after the TLS handshake{}: check that it was issued by this node's local CA (not another bureau's) and has not been revoked",
                self.describe,
                self.cert,
                refused.as_deref().unwrap_or_default()
            ),
            Code::Unavailable | Code::Unknown if msg.contains("transport") => format!(
                "; the connection to {} failed: check that the node runs, and that the client certificate{} is issued by the node's local CA and has not expired or been revoked",
                self.describe, self.cert
            ),
            Code::PermissionDenied | Code::Unauthenticated => format!(
                "; {} refused the client certificate{}: admin commands need a certificate with the admin role (`[client] admin_cert`), `submit` one with the intake role (`[client] intake_cert`), `inbox` commands one with the inbox role (`[client] inbox_cert`)",
                self.describe, self.cert
            ),
            Code::Unavailable | Code::ResourceExhausted => {
                format!(
                    "; {} cannot serve this now: retry later, and check its log",
                    self.describe
                )
            }
            _ => String::new(),
        };
        anyhow::Error::new(CallError {
            code: status.code(),
            refused_certificate: refused.is_some(),
            text: format!("`{call}` failed: {}: {msg}{hint}", code_name(status.code())),
        })
    }
}

/// A call the node answered with an error status, with the hint of [`Connection::call_error`].
#[derive(Debug)]
pub struct CallError {
    pub code: tonic::Code,
    /// The node refused the client certificate.
    pub refused_certificate: bool,
    text: String,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// Whether the same call may succeed when tried again unchanged: not when the node refused
    /// the certificate or the request itself.
    pub fn retry_may_help(&self) -> bool {
        use tonic::Code;
        !self.refused_certificate
            && !matches!(
                self.code,
                Code::Cancelled
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::NotFound
                    | Code::Unimplemented
            )
    }
}

/// Whether `e` came from a call the node refused in a way a rerun cannot fix.
pub fn rerun_cannot_help(e: &anyhow::Error) -> bool {
    e.downcast_ref::<CallError>()
        .is_some_and(|c| !c.retry_may_help())
}

/// One line for a failed connection: the address and where it came from, the innermost cause,
/// and the one thing to check that this cause points at.
fn connect_error(target: &Target, e: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let mut root = e;
    while let Some(inner) = root.source() {
        root = inner;
    }
    let cause = root.to_string();
    let cause = cause.strip_prefix("transport error: ").unwrap_or(&cause);
    let check = if cause.contains("not valid for name") {
        format!(
            "check the region `{}` (from {}) and the address",
            target.region.value, target.region.from
        )
    } else if cause.contains("invalid peer certificate") {
        format!(
            "check that `{}` (from {}) is that node's local CA",
            target.ca.value.display(),
            target.ca.from
        )
    } else if cause.contains("alert") {
        format!(
            "the node refused the client certificate `{}` (from {}): check that it was issued by this node's local CA and has not expired or been revoked",
            target.cert.value.display(),
            target.cert.from
        )
    } else {
        "check that the node runs and listens there (`local.listen` in its config)".to_owned()
    };
    anyhow!(
        "cannot connect to node `{}` at `{}` (from {}): {cause}; {check}",
        target.region.value,
        target.addr.value,
        target.addr.from
    )
}

/// Whether `status` shows the node refusing the client certificate, and the TLS alert if it
/// names one (` (received fatal alert: UnknownCA)`): a `cancelled` call whose connection the
/// node closed, or a transport error from the alert or the pipe the node closed.
fn refused_certificate(status: &tonic::Status) -> Option<String> {
    use tonic::Code;
    let chain = error_chain(status);
    if let Some(at) = chain.find("received fatal alert") {
        let alert = chain[at..]
            .split(['"', ')', ';'])
            .next()
            .unwrap_or_default();
        return Some(format!(" ({})", alert.trim()));
    }
    let transport = matches!(status.code(), Code::Unknown | Code::Unavailable)
        && status.message().contains("transport");
    let closed = status.code() == Code::Cancelled
        || (transport && chain.to_ascii_lowercase().contains("broken pipe"));
    closed.then(String::new)
}

/// `PermissionDenied` → `permission denied`.
fn code_name(c: tonic::Code) -> String {
    let mut s = String::new();
    for ch in format!("{c:?}").chars() {
        if ch.is_uppercase() && !s.is_empty() {
            s.push(' ');
        }
        s.extend(ch.to_lowercase());
    }
    s
}

/// An error followed by its sources, `a: b: c`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests;
