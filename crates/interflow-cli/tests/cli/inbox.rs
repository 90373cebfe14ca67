//! `interflowctl inbox` against two real nodes: records submitted at node 0 for node 1 are
//! pulled, acknowledged, matched and exported at node 1 with its inbox certificate. The FHIR
//! export is checked with an independent FHIR library (Python `fhir.resources`, R4B models).

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use interflow_core::pb;
use interflow_tests::{TestCluster, eventually};

use crate::e2e::{args, ctl};
use crate::{interflowctl, p};

const HEADER: &str = "idempotency_key,destination,national_id,kind,state,method,observed_on,expected_delivery,event_date,since,prenatal_visits,service_point,supersedes,retracted_kind";

/// A resident ID from 17 digits, with its GB 11643 check character.
fn resident(body: &str) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .bytes()
        .zip(W)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    format!("{body}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

/// Runs the CLI with `stdin`, off the async threads.
async fn ctl_stdin(args: Vec<String>, stdin: String) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = interflowctl()
            .args(&args)
            .write_stdin(stdin)
            .output()
            .expect("runs interflowctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("cli task")
}

async fn submit(c: &TestCluster, name: &str, rows: &str) {
    let csv = c.dir.path().join(name);
    std::fs::write(&csv, format!("{HEADER}\n{rows}")).unwrap();
    let (code, out, err) = ctl(args(c, 0, &["submit", "--file", p(&csv)])).await;
    assert_eq!(code, 0, "{out}{err}");
}

async fn wait_for_items(c: &TestCluster, n: usize) {
    let inbox = c.inbox(1).await;
    eventually(Duration::from_secs(20), "the records to arrive", || {
        let mut inbox = inbox.clone();
        async move {
            let items = inbox
                .pull(pb::PullRequest {
                    consumer: "test-probe".into(),
                    after: Some(0),
                    max: 0,
                    filter: None,
                })
                .await
                .ok()?
                .into_inner()
                .items;
            (items.len() >= n).then_some(())
        }
    })
    .await;
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_pull_ack_consumers_match_and_export_against_real_nodes() {
    let c = TestCluster::start(2).await;
    let dest = c.region(1).to_string();
    let anna = resident("11010519900101901");
    let bea = resident("11010519910202902");
    let stranger = resident("11010519920303903");
    submit(
        &c,
        "first.csv",
        &format!(
            "k-1,{dest},{anna},contraception,,iud,2025-11-10,,,2024-01-01,,3101150042,,\n\
             k-2,{dest},{bea},pregnancy,pregnant,,2025-11-10,2026-09,,,2,3101150042,,\n"
        ),
    )
    .await;
    wait_for_items(&c, 2).await;

    // pull: a table with the status summary and the short ref only.
    let (code, human_out, err) = ctl(args(&c, 1, &["inbox", "pull", "--consumer", "his"])).await;
    let out = human_out.clone();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("iud since 2024-01-01"), "{out}");
    assert!(out.contains("pregnant, due 2026-09"), "{out}");
    assert!(out.contains("ref:"), "{out}");
    let (code, out, err) = ctl(args(
        &c,
        1,
        &["inbox", "pull", "--consumer", "his", "--json"],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let page = json(&out);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["position"], 1);
    assert_eq!(items[0]["kind"], "contraception");
    assert_eq!(
        items[1]["status"],
        "pregnant, due 2026-09, 2 prenatal visits"
    );
    let iud_id = items[0]["record_id"].as_str().unwrap().to_owned();
    let full_ref = {
        let rec = c.wait_for_record(1, &hex::decode(&iud_id).unwrap()).await;
        hex::encode(rec.subject().as_bytes())
    };
    for text in [&human_out, &out] {
        assert!(!text.contains(&full_ref) && !text.contains(&anna), "{text}");
    }

    // pull --max 1 --ack acknowledges position 1 after printing it.
    let (code, out, err) = ctl(args(
        &c,
        1,
        &["inbox", "pull", "--consumer", "his", "--max", "1", "--ack"],
    ))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("acknowledged up to position 1"), "{out}");

    // consumers: lag 1; fine within an hour, late with a 1 ms limit (exit 1).
    let (code, out, err) = ctl(args(&c, 1, &["inbox", "consumers", "--json"])).await;
    assert_eq!(code, 0, "{out}{err}");
    let report = json(&out);
    let his = report["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "his")
        .unwrap()
        .clone();
    assert_eq!(
        (his["cursor"].as_u64(), his["lag_items"].as_u64()),
        (Some(1), Some(1))
    );
    let (code, out, _) = ctl(args(&c, 1, &["inbox", "consumers", "--max-age", "1ms"])).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("LATE"), "{out}");

    // ack to the head: nothing late any more.
    let (code, out, err) = ctl(args(
        &c,
        1,
        &["inbox", "ack", "--consumer", "his", "--position", "2"],
    ))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("acknowledged up to position 2"), "{out}");
    let (code, out, _) = ctl(args(&c, 1, &["inbox", "consumers", "--max-age", "1ms"])).await;
    assert_eq!(code, 0, "{out}");

    // match from stdin: by line number, never the ID; an invalid line makes exit 1.
    let stdin = format!("not-an-id\n{anna}\n\n{stranger}\n");
    let (code, out, err) = ctl_stdin(
        args(
            &c,
            1,
            &[
                "inbox",
                "match",
                "--ids",
                "-",
                "--purpose",
                "service-continuity",
            ],
        ),
        stdin.clone(),
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    for id in [&anna, &stranger] {
        assert!(
            !out.contains(id.as_str()) && !err.contains(id.as_str()),
            "{out}{err}"
        );
    }
    assert!(out.contains("1 resident of 3 lines"), "{out}");
    assert!(out.contains("(lines 1)"), "{out}");
    let (_, out, _) = ctl_stdin(
        args(
            &c,
            1,
            &[
                "inbox",
                "match",
                "--ids",
                "-",
                "--purpose",
                "own-request",
                "--json",
            ],
        ),
        stdin,
    )
    .await;
    let m = json(&out);
    assert_eq!(m["invalid_lines"], serde_json::json!([1]));
    assert_eq!(m["matches"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["matches"][0]["line"], 2);
    assert_eq!(m["matches"][0]["statuses"][0]["kind"], "contraception");
    assert!(!out.contains(&anna) && !out.contains(&full_ref));

    // A retraction of the IUD record, then the exports.
    submit(
        &c,
        "retraction.csv",
        &format!("k-3,{dest},{anna},retraction,,,,,,,,,{iud_id},contraception\n"),
    )
    .await;
    wait_for_items(&c, 3).await;

    let jsonl = c.dir.path().join("export.jsonl");
    let (code, out, err) = export(&c, "jsonl", &jsonl).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrote 3 items as jsonl"), "{out}");
    assert_mode_0600(&jsonl);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(json)
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["record_id"], iud_id.as_str());
    assert_eq!(lines[0]["withdrawn"], true);
    assert_eq!(lines[0]["subject_ref"], full_ref.as_str());
    assert_eq!(lines[1]["payload"]["expected_delivery"], "2026-09");
    assert_eq!(lines[2]["payload"]["type"], "retraction");
    assert_eq!(lines[2]["supersedes"], iud_id.as_str());

    let (code, out, err) = ctl(args(
        &c,
        1,
        &[
            "inbox",
            "export",
            "--consumer",
            "feed",
            "--after",
            "0",
            "--format",
            "csv",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(
        rows[0].starts_with("position,record_id,origin,seq,agreement_id,kind,type,subject_ref")
    );
    assert!(
        rows[1].contains(",iud,") && rows[1].contains(&full_ref),
        "{out}"
    );
    assert!(rows[3].contains(",retraction,"), "{out}");

    let fhir = c.dir.path().join("export.fhir.json");
    let (code, out, err) = export(&c, "fhir", &fhir).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_mode_0600(&fhir);
    let bundle = json(&std::fs::read_to_string(&fhir).unwrap());
    let entries = bundle["entry"].as_array().unwrap();
    // IUD (withdrawn), pregnancy status and its expected delivery date; no retraction entry.
    assert_eq!(entries.len(), 3, "{bundle}");
    let res: Vec<&serde_json::Value> = entries.iter().map(|e| &e["resource"]).collect();
    assert_eq!(res[0]["status"], "entered-in-error");
    assert_eq!(res[0]["code"]["coding"][0]["code"], "8659-5");
    assert_eq!(res[1]["status"], "final");
    assert_eq!(
        res[1]["valueCodeableConcept"]["coding"][0]["code"],
        "LA15173-0"
    );
    assert_eq!(res[2]["code"]["coding"][0]["code"], "11778-8");
    assert_eq!(res[0]["subject"]["identifier"]["value"], full_ref.as_str());
    fhir_check(&fhir, true);
    c.shutdown().await;
}

#[cfg(unix)]
fn assert_mode_0600(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
}

#[cfg(not(unix))]
fn assert_mode_0600(_: &Path) {}

/// Parses a Bundle and each entry's Observation with `fhir.resources` (R4B models, FHIR 4.3;
/// pinned in `.ci/run`). `valid` is what the library must conclude. Skips (passes) when
/// `python3` or the module is missing, unless `INTERFLOW_REQUIRE_FHIR_CHECK=1`.
fn fhir_check(bundle: &Path, valid: bool) {
    const SCRIPT: &str = r#"
import json, sys
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
data = json.load(open(sys.argv[1]))
def parse(model, obj):
    return model.model_validate(obj) if hasattr(model, "model_validate") else model.parse_obj(obj)
b = parse(Bundle, data)
assert b.type == "collection", b.type
n = 0
for e in data.get("entry", []):
    assert e["resource"]["resourceType"] == "Observation"
    parse(Observation, e["resource"])
    n += 1
print(f"fhir.resources R4B: Bundle and {n} Observations valid")
"#;
    let required = std::env::var("INTERFLOW_REQUIRE_FHIR_CHECK").as_deref() == Ok("1");
    let probe = std::process::Command::new("python3")
        .args(["-c", "import fhir.resources.R4B.bundle"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        let why = match &probe {
            Err(e) => format!("python3 cannot run: {e}"),
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        assert!(
            !required,
            "INTERFLOW_REQUIRE_FHIR_CHECK=1 but fhir.resources is unavailable: {why}; pip install 'fhir.resources==8.3.0'"
        );
        eprintln!(
            "skipped the FHIR validation: python3 with fhir.resources is unavailable ({why})"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("check_fhir.py");
    std::fs::File::create(&script)
        .unwrap()
        .write_all(SCRIPT.as_bytes())
        .unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(bundle)
        .output()
        .expect("runs python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert_eq!(out.status.success(), valid, "fhir.resources said: {text}");
}

/// The check is real: a Bundle whose Observation lacks its required `status` and `code` and
/// has a malformed date is refused by the library.
#[test]
fn the_fhir_check_refuses_a_broken_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(
        &path,
        r#"{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:00000000-0000-8000-8000-000000000000","resource":{"resourceType":"Observation","effectiveDateTime":"10 March 2026"}}]}"#,
    )
    .unwrap();
    fhir_check(&path, false);
}

/// `inbox export` of everything at node 1 through consumer `feed`, in `format`, to `path`.
async fn export(c: &TestCluster, format: &str, path: &std::path::Path) -> (i32, String, String) {
    ctl(args(
        c,
        1,
        &[
            "inbox",
            "export",
            "--consumer",
            "feed",
            "--after",
            "0",
            "--format",
            format,
            "--out",
            p(path),
        ],
    ))
    .await
}
