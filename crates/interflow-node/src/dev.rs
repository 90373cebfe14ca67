//! A whole local federation for development and tests: a federation CA and operator key,
//! per-node peer certificates, local CAs with `admin` and `intake` client certificates,
//! signing keys, the signed directory, signed two-way agreements between neighbouring nodes
//! (each with its pseudonym key), and one config file per node. Dev material only: keys are
//! generated on this machine and written under the chosen directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use interflow_core::agreement::{encode_body, party_signature};
use interflow_core::directory::{Directory, tls_identity_for};
use interflow_core::pseudonym::PseudonymKey;
use interflow_core::{RegionCode, keys, pb};
use interflow_tls::Role;
use interflow_tls::pki::{Ca, Validity, write_cert_file};
use prost::Message;
use serde::{Deserialize, Serialize};

/// Sample bureaus for the dev federation, in neighbour order.
pub const SAMPLE_REGIONS: [(&str, &str); 5] = [
    ("310115", "Shanghai Pudong"),
    ("110105", "Beijing Chaoyang"),
    ("440305", "Shenzhen Nanshan"),
    ("510104", "Chengdu Jinjiang"),
    ("330106", "Hangzhou Xihu"),
];

/// One node of `federation.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevNode {
    pub region: String,
    pub name: String,
    pub peer_addr: SocketAddr,
    pub local_addr: SocketAddr,
    pub config: PathBuf,
    pub federation_ca: PathBuf,
    pub local_ca: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub intake_cert: PathBuf,
    pub intake_key: PathBuf,
    pub inbox_cert: PathBuf,
    pub inbox_key: PathBuf,
}

/// `federation.json`: what scripts and tools need to reach every node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevFederation {
    pub nodes: Vec<DevNode>,
    /// Agreements as pairs of region codes.
    pub agreements: Vec<(String, String)>,
    /// Whether the agreements carry residence notices and status follows residence (odd
    /// nodes are the home bureaus, see [`DevOptions`]).
    #[serde(default)]
    pub residence: bool,
}

impl DevFederation {
    pub fn load(dir: &Path) -> anyhow::Result<DevFederation> {
        let p = dir.join("federation.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading `{}`", p.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "parsing `{}`; a dev federation made by an older interflow lacks newer files (such as the inbox certificates): remove `{}` to generate a new one",
                p.display(),
                dir.display()
            )
        })
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating `{}`", d.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing `{}`", path.display()))
}

fn mkdirs(path: &Path) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating `{}`", d.display()))?;
    }
    Ok(())
}

/// Generates a federation of `addrs.len()` nodes under `dir`, with agreements between
/// neighbours (node i and i+1). `addrs` are each node's (peer, local) listen addresses; the
/// directory lists each peer listen address as the node's endpoint.
pub fn generate(
    dir: &Path,
    addrs: &[(SocketAddr, SocketAddr)],
    now_ms: i64,
) -> anyhow::Result<DevFederation> {
    let endpoints: Vec<SocketAddr> = addrs.iter().map(|(peer, _)| *peer).collect();
    generate_with_endpoints(dir, addrs, &endpoints, now_ms)
}

/// What a generated federation's agreements say beyond the status kinds both ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevOptions {
    /// Residence notices and status follows residence: in each agreement the odd-indexed node
    /// (1, 3, …) is the home bureau, so residence notices go from its neighbours to it, and its
    /// status records go to a neighbour only while she is registered there.
    pub residence: bool,
    /// Every node signs with an SM2 key (`keys/signing-sm2.pem`, key id 1 in the directory);
    /// key id 0 stays the Ed25519 `keys/signing.pem`, which signs the agreements.
    pub sm2: bool,
}

/// The config's signing key file of a generated node.
fn signing_key_file(options: &DevOptions) -> &'static str {
    if options.sm2 {
        "keys/signing-sm2.pem"
    } else {
        "keys/signing.pem"
    }
}

/// Like [`generate`], with the endpoint the directory publishes for each node given apart
/// from where it listens (for a proxy in between, as tests of partitions use).
pub fn generate_with_endpoints(
    dir: &Path,
    addrs: &[(SocketAddr, SocketAddr)],
    endpoints: &[SocketAddr],
    now_ms: i64,
) -> anyhow::Result<DevFederation> {
    generate_with_options(dir, addrs, endpoints, now_ms, DevOptions::default())
}

/// Like [`generate_with_endpoints`], with [`DevOptions`].
pub fn generate_with_options(
    dir: &Path,
    addrs: &[(SocketAddr, SocketAddr)],
    endpoints: &[SocketAddr],
    now_ms: i64,
    options: DevOptions,
) -> anyhow::Result<DevFederation> {
    anyhow::ensure!(endpoints.len() == addrs.len(), "one endpoint per node");
    anyhow::ensure!(
        (2..=SAMPLE_REGIONS.len()).contains(&addrs.len()),
        "a dev federation has 2 to {} nodes",
        SAMPLE_REGIONS.len()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    // Absolute paths in `federation.json`, so tools work from any directory.
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("resolving `{}`", dir.display()))?;
    let fed_dir = dir.join("federation");
    std::fs::create_dir_all(&fed_dir)
        .with_context(|| format!("creating `{}`", fed_dir.display()))?;
    let ca = Ca::generate("interflow dev federation CA")?;
    ca.write_pem_files(&fed_dir.join("ca.pem"), &fed_dir.join("ca.key"))?;
    let operator = keys::generate_signing_key();
    keys::save_signing_key(&fed_dir.join("operator.pem"), &operator)?;
    keys::save_verifying_key(&fed_dir.join("operator.pub.pem"), &operator.verifying_key())?;

    let mut members = Vec::new();
    let mut signing = Vec::new();
    let mut nodes = Vec::new();
    for (i, (peer_addr, local_addr)) in addrs.iter().enumerate() {
        let (code, name) = SAMPLE_REGIONS[i];
        let region: RegionCode = code.parse()?;
        let nd = dir.join(code);
        let key = keys::generate_signing_key();
        mkdirs(&nd.join("keys/signing.pem"))?;
        keys::save_signing_key(&nd.join("keys/signing.pem"), &key)?;
        let mut listed = Vec::new();
        if options.sm2 {
            let sm2 = interflow_core::sm2_suite::Sm2SigningKey::generate();
            keys::save_sm2_signing_key(&nd.join(signing_key_file(&options)), &sm2)?;
            let public = interflow_core::directory::PublicKey::Sm2(sm2.verifying_key());
            keys::save_public_key(&nd.join("keys/signing-sm2.pub.pem"), &public)?;
            listed.push(pb::MemberKey {
                key_id: 1,
                alg: public.alg_pb(),
                public_key: public.to_bytes(),
                valid_from_ms: now_ms - 86_400_000,
                valid_until_ms: 0,
                revoked_at_ms: 0,
            });
        }
        // The master key lives beside the other keys, outside the data directory.
        interflow_store::MasterKey::write_new(&nd.join("keys/master.key"))?;
        mkdirs(&nd.join("tls/x"))?;
        write_cert_file(&nd.join("tls/federation-ca.pem"), &ca.cert_pem())?;
        let peer = ca.issue_peer_cert(
            region,
            &["localhost".into()],
            &[peer_addr.ip()],
            Validity::days(825),
        )?;
        peer.write_pem_files(&nd.join("tls/node.pem"), &nd.join("tls/node.key"))?;
        let local_ca = Ca::generate(&format!("interflow dev local CA {code}"))?;
        local_ca.write_pem_files(&nd.join("tls/local-ca.pem"), &nd.join("tls/local-ca.key"))?;
        let server = local_ca.issue_local_server_cert(region, Validity::days(825))?;
        server.write_pem_files(
            &nd.join("tls/local-server.pem"),
            &nd.join("tls/local-server.key"),
        )?;
        mkdirs(&nd.join("clients/x"))?;
        let admin = local_ca.issue_role_cert(Role::Admin, "dev-operator", Validity::days(825))?;
        admin.write_pem_files(&nd.join("clients/admin.pem"), &nd.join("clients/admin.key"))?;
        let intake = local_ca.issue_role_cert(Role::Intake, "dev-intake", Validity::days(825))?;
        intake.write_pem_files(
            &nd.join("clients/intake.pem"),
            &nd.join("clients/intake.key"),
        )?;
        let inbox = local_ca.issue_role_cert(Role::Inbox, "dev-clinic", Validity::days(825))?;
        inbox.write_pem_files(&nd.join("clients/inbox.pem"), &nd.join("clients/inbox.key"))?;
        members.push(pb::Member {
            region_code: code.into(),
            name: name.into(),
            endpoint: endpoints[i].to_string(),
            signing_key: key.verifying_key().to_bytes().to_vec(),
            tls_identity: tls_identity_for(region),
            keys: listed,
        });
        signing.push(key);
        nodes.push(DevNode {
            region: code.into(),
            name: name.into(),
            peer_addr: *peer_addr,
            local_addr: *local_addr,
            config: nd.join("interflow.toml"),
            federation_ca: nd.join("tls/federation-ca.pem"),
            local_ca: nd.join("tls/local-ca.pem"),
            admin_cert: nd.join("clients/admin.pem"),
            admin_key: nd.join("clients/admin.key"),
            intake_cert: nd.join("clients/intake.pem"),
            intake_key: nd.join("clients/intake.key"),
            inbox_cert: nd.join("clients/inbox.pem"),
            inbox_key: nd.join("clients/inbox.key"),
        });
    }
    let directory = Directory::sign(
        &pb::DirectoryBody {
            serial: 1,
            issued_at_ms: now_ms,
            members,
            expires_at_ms: 0,
        },
        &operator,
    )
    .encode_to_vec();
    write(&fed_dir.join("directory.pb"), &directory)?;

    let mut agreements = Vec::new();
    let mut per_node: Vec<Vec<String>> = vec![Vec::new(); addrs.len()];
    for i in 0..addrs.len() - 1 {
        let (a, b) = (SAMPLE_REGIONS[i].0, SAMPLE_REGIONS[i + 1].0);
        let id = format!("agr-{a}-{b}");
        let body = encode_body(&pb::AgreementBody {
            agreement_id: id.clone(),
            party_a: a.into(),
            party_b: b.into(),
            kinds: vec![
                pb::RecordKind::PregnancyStatus as i32,
                pb::RecordKind::ContraceptionStatus as i32,
            ],
            valid_from_ms: now_ms - 86_400_000,
            valid_until_ms: now_ms + 5 * 365 * 86_400_000,
            legal_basis: pb::LegalBasisKind::StatutoryDuty as i32,
            statute_reference: "PFPL-2021-art-19".into(),
            retention_days: 3650,
            date_precision: pb::DatePrecision::Day as i32,
            kinds_a_to_b: residence_kinds(options, i % 2 == 0),
            kinds_b_to_a: residence_kinds(options, i % 2 == 1),
            status_follows_residence: options.residence,
            required_signature_algorithm: 0,
        });
        let signed = pb::SignedAgreement {
            signatures: vec![
                party_signature(&signing[i], a.parse()?, &body),
                party_signature(&signing[i + 1], b.parse()?, &body),
            ],
            body,
        }
        .encode_to_vec();
        let pseudonym = PseudonymKey::generate(&mut rand::rngs::OsRng);
        for n in [i, i + 1] {
            let nd = dir.join(SAMPLE_REGIONS[n].0);
            write(&nd.join(format!("agreements/{id}.pb")), &signed)?;
            keys::save_pseudonym_key(&nd.join(format!("agreements/{id}.key")), &pseudonym)?;
            per_node[n].push(id.clone());
        }
        agreements.push((a.to_owned(), b.to_owned()));
    }
    for (i, node) in nodes.iter().enumerate() {
        let nd = dir.join(&node.region);
        write(&nd.join("federation/directory.pb"), &directory)?;
        std::fs::copy(
            fed_dir.join("operator.pub.pem"),
            nd.join("federation/operator.pub.pem"),
        )
        .context("copying the operator key")?;
        write(
            &node.config,
            config_text(node, &per_node[i], signing_key_file(&options)).as_bytes(),
        )?;
    }
    let fed = DevFederation {
        nodes,
        agreements,
        residence: options.residence,
    };
    write(
        &dir.join("federation.json"),
        serde_json::to_string_pretty(&fed)?.as_bytes(),
    )?;
    Ok(fed)
}

fn config_text(node: &DevNode, agreements: &[String], signing_key: &str) -> String {
    let list = agreements
        .iter()
        .map(|a| format!("\"agreements/{a}.pb\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut keys = String::new();
    for a in agreements {
        keys.push_str(&format!(
            "\n[[pseudonym_keys]]\nagreement = \"{a}\"\nkey_file = \"agreements/{a}.key\"\n"
        ));
    }
    format!(
        r#"# Generated by `interflow dev`: dev material only. See deploy/examples/interflow.toml for every key.
version = 1
region = "{region}"
name = "{name}"
data_dir = "data"

[peer]
listen = "{peer}"

[local]
listen = "{local}"

[keys]
signing_key = "{signing_key}"
master_key = "keys/master.key"

[tls]
federation_ca = "tls/federation-ca.pem"
cert = "tls/node.pem"
key = "tls/node.key"
local_ca = "tls/local-ca.pem"
local_cert = "tls/local-server.pem"
local_key = "tls/local-server.key"

[federation]
directory = "federation/directory.pb"
operator_key = "federation/operator.pub.pem"
agreements = [{list}]
watch_interval_ms = 2000
{keys}
[delivery]
min_backoff_ms = 100
max_backoff_ms = 2000

[reconcile]
interval_secs = 30
jitter_secs = 5

[client]
admin_cert = "clients/admin.pem"
admin_key = "clients/admin.key"
intake_cert = "clients/intake.pem"
intake_key = "clients/intake.key"
inbox_cert = "clients/inbox.pem"
inbox_key = "clients/inbox.key"
"#,
        region = node.region,
        name = node.name,
        peer = node.peer_addr,
        local = node.local_addr,
    )
}

/// What `interflow dev` suggests trying, as shell command lines that work as printed from the
/// directory `interflow dev` ran in (`dir` as given to `--dir`). The synthetic ID goes through
/// stdin (`--id -`), the way an operator keeps a real one out of the shell history.
pub fn hints(fed: &DevFederation, dir: &Path) -> Vec<String> {
    let (Some(first), Some(second)) = (fed.nodes.first(), fed.nodes.get(1)) else {
        return Vec::new();
    };
    // `interflowctl` looks in `.interflow-dev` unless told otherwise.
    let dev_dir = if dir == Path::new(".interflow-dev") {
        String::new()
    } else {
        format!(" --dev-dir {}", shell_word(&dir.display().to_string()))
    };
    let ctl = |n: &DevNode| format!("interflowctl{dev_dir} --dev-node {}", n.region);
    vec![
        format!("{} pending", ctl(first)),
        format!("{} channels", ctl(second)),
        format!(
            "echo {} | {} lookup --purpose service-continuity --id -",
            synthetic_id(0),
            ctl(second)
        ),
        format!("{} reconcile", ctl(first)),
        format!("{} inbox follow --consumer clinic", ctl(second)),
    ]
}

/// `word` as one shell word: as it is when plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-+:@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A clearly synthetic resident ID with a valid check character: address code `110105`,
/// birth date 1990-01-01 plus `n % 3650` days, and sequence `n % 1000` — in the `9xx` range
/// no real registry uses for the dev sample's sequence numbers.
pub fn synthetic_id(n: u64) -> String {
    let birth = chrono::NaiveDate::from_ymd_opt(1990, 1, 1).unwrap_or_default()
        + chrono::Days::new(n % 3650);
    let body = format!("110105{}{:03}", birth.format("%Y%m%d"), 900 + n % 100);
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .bytes()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{body}{check}")
}

/// A synthetic contraception-status submission for `destination`.
pub fn sample_submission(n: u64, destination: &str) -> pb::Submission {
    let methods = [
        pb::ContraceptiveMethod::Iud,
        pb::ContraceptiveMethod::Implant,
        pb::ContraceptiveMethod::OralPill,
        pb::ContraceptiveMethod::Condom,
    ];
    pb::Submission {
        idempotency_key: format!("dev-{destination}-{n}"),
        destination: destination.into(),
        national_id: synthetic_id(n),
        supersedes: Vec::new(),
        payload: Some(pb::submission::Payload::Contraception(
            pb::ContraceptionStatus {
                method: methods[(n % 4) as usize] as i32,
                since: Some(pb::Date {
                    year: 2024,
                    month: 1 + (n % 12) as u32,
                    day: 1,
                }),
                observed_on: Some(pb::Date {
                    year: 2025,
                    month: 1 + (n % 12) as u32,
                    day: 15,
                }),
                service_point: "1101050001".into(),
            },
        )),
    }
}

/// `[residence]` for the direction residence notices take (towards the odd-indexed node).
fn residence_kinds(options: DevOptions, this_way: bool) -> Vec<i32> {
    if options.residence && this_way {
        vec![pb::RecordKind::Residence as i32]
    } else {
        Vec::new()
    }
}

/// The synthetic person node `from` sends its `k`-th sample status to node `to` about. With
/// residence, a home bureau's statuses name people registered by that neighbour only.
pub fn sample_person(fed: &DevFederation, from: usize, to: usize, k: u64) -> u64 {
    if fed.residence && from % 2 == 1 {
        k + 100 * from as u64 + 10 * to as u64
    } else {
        k + 100 * from as u64
    }
}

/// The residence notices of the dev samples, per sending node: each residence bureau (even
/// node) registers with each neighbouring home bureau the people that home's sample statuses
/// name, one more person who arrives and then departs, and one who arrives and is not answered
/// yet (so the home's worklist and the coverage figures have something to show).
pub fn residence_samples(fed: &DevFederation, samples: u64) -> Vec<(usize, pb::Submission)> {
    let mut out = Vec::new();
    if !fed.residence {
        return out;
    }
    let n = fed.nodes.len();
    for j in (0..n).step_by(2) {
        for i in [j.checked_sub(1), Some(j + 1)].into_iter().flatten() {
            if i >= n {
                continue;
            }
            let home = &fed.nodes[i].region;
            let notice = |person: u64, event: pb::ResidenceEvent, month: u32| pb::Submission {
                idempotency_key: format!("dev-res-{home}-{person}-{}", event.as_str_name()),
                destination: home.clone(),
                national_id: synthetic_id(person),
                supersedes: Vec::new(),
                payload: Some(pb::submission::Payload::Residence(pb::ResidenceNotice {
                    event: event as i32,
                    month: Some(pb::YearMonth { year: 2025, month }),
                })),
            };
            for k in 0..=samples + 1 {
                let person = sample_person(fed, i, j, k);
                out.push((j, notice(person, pb::ResidenceEvent::Arrived, 5)));
            }
            let gone = sample_person(fed, i, j, samples);
            out.push((j, notice(gone, pb::ResidenceEvent::Departed, 6)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_ids_are_valid() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        for n in 0..500 {
            assert!(
                interflow_core::NationalId::parse(&synthetic_id(n), today).is_ok(),
                "{n}"
            );
        }
    }
}
