use super::*;

fn args() -> ConnArgs {
    ConnArgs {
        addr: None,
        ca: None,
        cert: None,
        key: None,
        region: None,
        config: None,
        dev_node: None,
        dev_dir: PathBuf::from(".interflow-dev"),
        connect_timeout: Duration::from_secs(5),
        timeout: DEFAULT_REQUEST_TIMEOUT,
    }
}

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("interflow.toml");
    std::fs::write(
        &path,
        r#"version = 1
region = "310115"
name = "ignored"
data_dir = "data"
[peer]
listen = "0.0.0.0:7443"
[local]
listen = "0.0.0.0:7444"
[tls]
federation_ca = "tls/federation-ca.pem"
local_ca = "tls/local-ca.pem"
[client]
admin_cert = "clients/admin.pem"
admin_key = "/abs/admin.key"
intake_cert = "clients/intake.pem"
intake_key = "clients/intake.key"
[limits]
max_submit_batch = 10
"#,
    )
    .unwrap();
    path
}

#[test]
fn config_file_gives_every_setting_with_paths_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let p = Partial::from_config(&path, Role::Admin).unwrap();
    assert_eq!(p.addr.as_ref().unwrap().value, "127.0.0.1:7444");
    assert!(p.addr.unwrap().from.contains("local.listen"));
    assert_eq!(p.ca.unwrap().value, dir.path().join("tls/local-ca.pem"));
    assert_eq!(p.cert.unwrap().value, dir.path().join("clients/admin.pem"));
    assert_eq!(p.key.unwrap().value, PathBuf::from("/abs/admin.key"));
    assert_eq!(p.region.unwrap().value, "310115");
    let intake = Partial::from_config(&path, Role::Intake).unwrap();
    assert_eq!(
        intake.cert.unwrap().value,
        dir.path().join("clients/intake.pem")
    );
}

#[test]
fn flag_beats_env_beats_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let mut a = args();
    a.config = Some(path.clone());
    a.cert = Some(PathBuf::from("flag.pem"));
    a.addr = Some("10.0.0.1:1".into());
    let env = |k: &str| match k {
        "INTERFLOW_ADDR" => Some("env:2".to_owned()),
        "INTERFLOW_KEY" => Some("env.key".to_owned()),
        "INTERFLOW_CA" => Some(String::new()),
        _ => None,
    };
    let t = resolve(&a, Role::Admin, &env).unwrap();
    assert_eq!(t.addr.value, "10.0.0.1:1");
    assert_eq!(t.addr.from, "--addr");
    assert_eq!(t.cert.value, PathBuf::from("flag.pem"));
    assert_eq!(t.key.value, PathBuf::from("env.key"));
    assert_eq!(t.key.from, "INTERFLOW_KEY");
    // An empty variable counts as unset, so the config file's CA applies.
    assert_eq!(t.ca.value, dir.path().join("tls/local-ca.pem"));
    assert!(t.ca.from.contains("tls.local_ca"));
    assert_eq!(t.region.value.as_str(), "310115");

    // Without a flag, env wins over the file.
    a.addr = None;
    let t = resolve(&a, Role::Admin, &env).unwrap();
    assert_eq!(t.addr.value, "env:2");
}

#[test]
fn missing_settings_are_all_named() {
    let err = resolve(&args(), Role::Admin, &|_| None).unwrap_err();
    let msg = err.to_string();
    for want in [
        "--addr",
        "INTERFLOW_CA",
        "--cert",
        "--key",
        "--region",
        "--dev-node",
    ] {
        assert!(msg.contains(want), "{msg}");
    }
    let mut a = args();
    a.addr = Some("127.0.0.1:1".into());
    a.ca = Some("ca.pem".into());
    a.cert = Some("c.pem".into());
    a.key = Some("c.key".into());
    a.region = Some("999999".into());
    let msg = format!("{:#}", resolve(&a, Role::Admin, &|_| None).unwrap_err());
    assert!(msg.contains("region `999999` from --region"), "{msg}");
}

#[test]
fn dev_federation_node_is_found_and_unknown_ones_listed() {
    let dir = tempfile::tempdir().unwrap();
    let nd = dir.path().join("310115");
    std::fs::create_dir_all(nd.join("clients")).unwrap();
    std::fs::write(nd.join("clients/intake.pem"), "x").unwrap();
    let json = serde_json::json!({
        "nodes": [{
            "region": "310115", "name": "Shanghai Pudong",
            "peer_addr": "127.0.0.1:7001", "local_addr": "127.0.0.1:7002",
            "config": "310115/interflow.toml",
            "federation_ca": "310115/tls/federation-ca.pem",
            "local_ca": "310115/tls/local-ca.pem",
            "admin_cert": "/abs/admin.pem", "admin_key": "/abs/admin.key",
            "intake_cert": "310115/clients/intake.pem",
            "intake_key": "310115/clients/intake.key",
            "inbox_cert": "310115/clients/inbox.pem",
            "inbox_key": "310115/clients/inbox.key"
        }],
        "agreements": [["310115", "110105"]]
    });
    std::fs::write(dir.path().join("federation.json"), json.to_string()).unwrap();
    let p = Partial::from_dev(dir.path(), "310115", Role::Intake).unwrap();
    assert_eq!(p.addr.unwrap().value, "127.0.0.1:7002");
    assert_eq!(p.cert.unwrap().value, nd.join("clients/intake.pem"));
    assert_eq!(p.ca.unwrap().value, nd.join("tls/local-ca.pem"));
    let admin = Partial::from_dev(dir.path(), "310115", Role::Admin).unwrap();
    assert_eq!(admin.key.unwrap().value, PathBuf::from("/abs/admin.key"));
    let err = Partial::from_dev(dir.path(), "110105", Role::Admin).unwrap_err();
    assert!(err.to_string().contains("its nodes are 310115"), "{err}");
    let err = Partial::from_dev(&dir.path().join("nope"), "310115", Role::Admin).unwrap_err();
    assert!(err.to_string().contains("interflow dev"), "{err}");
}

#[test]
fn wildcard_listen_addresses_are_dialled_on_loopback() {
    assert_eq!(dialable("0.0.0.0:7444"), "127.0.0.1:7444");
    assert_eq!(dialable("[::]:7444"), "[::1]:7444");
    assert_eq!(dialable("10.1.2.3:7444"), "10.1.2.3:7444");
}

#[tokio::test]
async fn call_errors_read_well_without_a_certificate_path() {
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    let conn = Connection::new(channel, "node `310115`");
    let e = conn.call_error(
        "Admin.Stats",
        tonic::Status::permission_denied("a peer certificate cannot call local services"),
    );
    let text = e.to_string();
    assert!(
        text.contains("node `310115` refused the client certificate: admin commands"),
        "{text}"
    );
    let e = conn.call_error(
        "Admin.Stats",
        tonic::Status::cancelled("operation was canceled"),
    );
    let text = e.to_string();
    assert!(
        text.contains("refused the client certificate during or after the TLS handshake"),
        "{text}"
    );
    assert!(rerun_cannot_help(&e));
    assert!(!rerun_cannot_help(&conn.call_error(
        "Intake.Submit",
        tonic::Status::unavailable("busy")
    )));
}
