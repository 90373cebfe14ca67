//! `interflow dev` as a user runs it: a real process, read through `federation.json` and the
//! admin certificate, stopped with Ctrl-C and started again on the same data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use interflow_core::pb;
use interflow_node::dev::DevFederation;
use interflow_tests::eventually;

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `interflow dev` and returns once it printed `ready`, with everything it printed.
fn start(dir: &std::path::Path) -> (Dev, String) {
    let mut child = Dev(Command::new(env!("CARGO_BIN_EXE_interflow"))
        .args(["dev", "--nodes", "3", "--samples", "5", "--dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn interflow dev"));
    let out = child.0.stdout.take().expect("stdout");
    let mut text = String::new();
    for line in BufReader::new(out).lines() {
        let line = line.expect("read stdout");
        text.push_str(&line);
        text.push('\n');
        if line.starts_with("ready") {
            return (child, text);
        }
    }
    panic!("interflow dev exited before it was ready:\n{text}");
}

fn interrupt(mut dev: Dev) {
    let pid = dev.0.id().to_string();
    let ok = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
    let status = dev.0.wait().expect("wait");
    assert!(
        status.success(),
        "interflow dev did not stop cleanly: {status}"
    );
}

async fn inbound_at(fed: &DevFederation, i: usize) -> pb::StatsResponse {
    let n = &fed.nodes[i];
    let cfg = interflow_tls::client_config(&n.local_ca, &n.admin_cert, &n.admin_key).unwrap();
    let ch = interflow_tls::connect(
        &n.local_addr.to_string(),
        &interflow_tls::local_server_name(n.region.parse().unwrap()),
        cfg,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    pb::admin_client::AdminClient::new(ch)
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_federation_runs_delivers_and_restarts_on_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (dev, out) = start(&dir);
    assert!(out.contains("interflowctl --dev-dir"), "{out}");
    let fed = DevFederation::load(&dir).unwrap();
    assert_eq!(fed.nodes.len(), 3);
    // Each node serves `/metrics` on loopback, and says where.
    let urls: Vec<&str> = out
        .split_whitespace()
        .filter(|w| w.starts_with("http://127.0.0.1:") && w.ends_with("/metrics"))
        .collect();
    assert_eq!(urls.len(), 3, "{out}");
    for (url, n) in urls.iter().zip(&fed.nodes) {
        let addr = &url["http://".len()..url.len() - "/metrics".len()];
        let text = scrape(addr).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let build = format!("interflow_build_info{{region=\"{}\"", n.region);
        assert!(text.contains(&build), "{url}: {text}");
    }
    // The middle node is the home bureau of both neighbours: from each, 5 sample statuses and
    // the residence notices (7 arrivals: the 5 people its statuses name, one who then departs,
    // one not answered yet; and 1 departure) reach it.
    const EXPECTED: u64 = 2 * (5 + 7 + 1);
    let before = eventually(
        Duration::from_secs(30),
        "sample records at the middle node",
        || async {
            let s = inbound_at(&fed, 1).await;
            (s.records_inbound >= EXPECTED).then_some(s)
        },
    )
    .await;
    assert_eq!(before.records_inbound, EXPECTED);
    interrupt(dev);

    let (dev, out) = start(&dir);
    assert!(out.contains("reusing"), "{out}");
    assert!(
        out.contains("submitted 0 new"),
        "a rerun must not add records:\n{out}"
    );
    let after = inbound_at(&fed, 1).await;
    assert_eq!(after.records_inbound, before.records_inbound);
    assert_eq!(after.records_outbound, before.records_outbound);
    interrupt(dev);
}

/// A directory that holds a federation keeps its size: asking for another number of nodes is
/// refused with what the directory holds and how to start over, instead of silently running
/// the old size.
#[tokio::test]
async fn dev_refuses_another_number_of_nodes_on_an_existing_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs: Vec<_> = (0..3)
        .map(|i| {
            let a = std::net::SocketAddr::from(([127, 0, 0, 1], 20_000 + i));
            (a, a)
        })
        .collect();
    interflow_node::dev::generate(dir.path(), &addrs, 1_767_225_600_000).expect("generate");
    let mut child = Dev(Command::new(env!("CARGO_BIN_EXE_interflow"))
        .args(["dev", "--nodes", "4", "--dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn interflow dev"));
    // Without the check it would run the 3 nodes until stopped.
    let status = eventually(Duration::from_secs(20), "interflow dev to exit", || {
        let exited = child.0.try_wait().expect("wait");
        async move { exited }
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("holds 3 nodes, not 4"), "{stderr}");
    assert!(stderr.contains("remove"), "{stderr}");
}
