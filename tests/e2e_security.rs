//! Transport security against the real local servers: the ClickHouse user with a
//! password that deploy/local/up defines (`crm_secure`), a wrong password failing
//! at start with an error that names [clickhouse] (no panic, no endless retry),
//! and ClickHouse over https with a private CA (a TLS proxy in front of the local
//! server, certificates made by the `openssl` command), and Kafka with SASL/SCRAM on
//! the local broker's authenticated listeners (SASL_PLAINTEXT and SASL_SSL, which
//! deploy/local/up adds with the user `crm_sasl`): an event goes collector → Kafka →
//! pipeline → ClickHouse over them, and a wrong password or a missing CA stops each
//! process at start with the settings named.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// How the tests reach `crm_secure`: the same variables and defaults as
/// deploy/local/env.sh, resolved by socialcrm's own `${VAR:-default}` interpolation.
const SECURE_LOGIN: &str = "user = \"${CLICKHOUSE_SECURE_USER:-crm_secure}\"\npassword = \"${CLICKHOUSE_SECURE_PASSWORD:-crm-secure-pass}\"\n";
const WRONG_PASSWORD: &str = "not-the-password-7f3a";

/// The world's config with `[clickhouse]` changed: `database = ...` is followed by `extra`,
/// and `url` replaced when `url` is given.
fn clickhouse_variant(w: &World, extra: &str, url: Option<&str>, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(&w.config).expect("config");
    let db_line = format!("database = \"{}\"\n", w.db);
    assert!(text.contains(&db_line), "{text}");
    let mut text = text.replace(&db_line, &format!("{db_line}{extra}"));
    if let Some(url) = url {
        let old = format!("url = \"{}\"\n", clickhouse_url());
        assert!(text.contains(&old), "{text}");
        text = text.replace(&old, &format!("url = \"{url}\"\n"));
    }
    let path = w.dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn run_with(config: &Path, args: &[&str]) -> Output {
    Command::new(World::bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run socialcrm")
}

/// Runs a command that must end by itself within `limit`; its exit status and stderr.
fn run_bounded(config: &Path, args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Command::new(World::bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socialcrm");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            return (status.success(), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut s) = child.stderr.take() {
                use std::io::Read;
                let _ = s.read_to_string(&mut err);
            }
            panic!(
                "socialcrm {args:?} ({}) still running after {limit:?}; its stderr:\n{err}",
                config.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command that must fail by itself within a minute, without a panic or
/// the password in its output, and with each of `wants` in its error.
fn assert_fails_clearly(config: &Path, args: &[&str], wants: &[&str]) {
    let (ok, stderr) = run_bounded(config, args, Duration::from_secs(60));
    assert!(!ok, "{args:?} succeeded");
    for want in wants {
        assert!(stderr.contains(want), "{args:?}: no `{want}` in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    assert!(
        !stderr.contains(WRONG_PASSWORD),
        "{args:?} printed the password:\n{stderr}"
    );
}

#[test]
fn clickhouse_user_with_password() {
    let mut w = World::new("chauth");
    let secure = clickhouse_variant(&w, SECURE_LOGIN, None, "secure.toml");
    let wrong = clickhouse_variant(
        &w,
        &format!("user = \"crm_secure\"\npassword = \"{WRONG_PASSWORD}\"\n"),
        None,
        "wrong.toml",
    );
    // a wrong password: a clear error naming [clickhouse] and the user, at once (before
    // this world's own pipeline holds the identity store)
    let t = Instant::now();
    assert_fails_clearly(
        &wrong,
        &["migrate", "--no-kafka"],
        &[
            "[clickhouse]",
            "`crm_secure`",
            "check [clickhouse] user and password",
        ],
    );
    assert_fails_clearly(
        &wrong,
        &["pipeline"],
        &[
            "[clickhouse]",
            "`crm_secure`",
            "check [clickhouse] user and password",
        ],
    );
    eprintln!("both wrong-password runs ended in {:?}", t.elapsed());

    // from here on every socialcrm process of this world logs in as crm_secure
    std::fs::copy(&secure, &w.config).expect("use the secure config");

    let out = w.cli(&["migrate", "--no-kafka"]);
    assert!(
        out.status.success(),
        "migrate as crm_secure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.start_collector();
    w.start_pipeline();
    let r = w.post(
        "/v1/identify",
        &json!({"userId": "sec-1", "messageId": "sec-m1", "traits": {"email": "Sec@Example.com"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    w.wait_caught_up();
    let p = w.profile_json("email:sec@example.com");
    assert!(
        profile_identifiers(&p).contains(&"user_id:sec-1"),
        "profile read as crm_secure: {p}"
    );
    assert_eq!(
        w.query_u64("SELECT count() FROM events FINAL WHERE event_id = 'web:sec-m1'"),
        1
    );
}

/// Writes a CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sh = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=socialcrm test CA",
    ]);
    sh(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    sh(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// TLS in front of the local ClickHouse HTTP port, like a load balancer would be.
struct TlsProxy {
    port: u16,
    _rt: tokio::runtime::Runtime,
}

impl TlsProxy {
    fn start(cert: &Path, key: &Path, upstream: String) -> TlsProxy {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("cert")
            .collect::<Result<_, _>>()
            .expect("cert pem");
        let key = PrivateKeyDer::from_pem_file(key).expect("key pem");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        rt.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    // a client that refuses our certificate ends the handshake here
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
            }
        });
        TlsProxy { port, _rt: rt }
    }
}

#[test]
fn clickhouse_over_https_with_a_private_ca() {
    let w = World::new("chtls");
    let (ca, cert, key) = make_certificates(w.dir.path());
    let upstream = clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = TlsProxy::start(&cert, &key, upstream);
    let url = format!("https://localhost:{}", proxy.port);

    let trusted = clickhouse_variant(
        &w,
        &format!("tls_ca_file = \"{}\"\n", ca.display()),
        Some(&url),
        "tls.toml",
    );
    let out = run_with(&trusted, &["migrate", "--no-kafka"]);
    assert!(
        out.status.success(),
        "migrate over https: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&url),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run_with(&trusted, &["profile", "get", "email:nobody@example.com"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("clickhouse") && !err.contains("certificate"),
        "a query over https failed: {err}"
    );

    // without the CA the server's certificate is refused: at once, with the reason
    let untrusted = clickhouse_variant(&w, "", Some(&url), "untrusted.toml");
    assert_fails_clearly(
        &untrusted,
        &["migrate", "--no-kafka"],
        &["[clickhouse]", "certificate", "tls_ca_file"],
    );
    assert_fails_clearly(&untrusted, &["pipeline"], &["[clickhouse]", "certificate"]);
    // a CA file that is not there is a config error naming the field
    let missing = clickhouse_variant(
        &w,
        "tls_ca_file = \"/nonexistent/ca.pem\"\n",
        Some(&url),
        "missing.toml",
    );
    assert_fails_clearly(
        &missing,
        &["migrate", "--no-kafka"],
        &["clickhouse.tls_ca_file", "/nonexistent/ca.pem"],
    );
}

fn post_with(w: &World, path: &str, key: &str, body: &serde_json::Value) -> http::Resp {
    http::request(
        "POST",
        &w.collector_url(path),
        &[
            ("Authorization", basic_auth(key)),
            ("Content-Type", "application/json".into()),
        ],
        body.to_string().as_bytes(),
    )
    .expect("collector reachable")
}

fn error_of(r: &http::Resp) -> String {
    serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no JSON error in {}: {}", r.status, r.body))
}

/// The world's config with its `[collector]` write key line replaced by `keys_toml`.
fn set_collector_keys(w: &World, keys_toml: &str) {
    let text = std::fs::read_to_string(&w.config).expect("config");
    let start = text.find("write_keys = ").expect("write_keys line");
    let end = start
        + text[start..]
            .find("\ndefault_phone_region")
            .expect("next line");
    let text = format!("{}{keys_toml}{}", &text[..start], &text[end..]);
    std::fs::write(&w.config, text).expect("config");
}

fn sighup(w: &mut World, i: usize) {
    let pid = w.child(i).id().to_string();
    let st = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
}

#[test]
fn collector_keys_per_source_reload_and_rate_limit() {
    let mut w = World::new("colkeys");
    let short = w.write_key.clone();
    let eu = format!("eu-{}", w.write_key);
    set_collector_keys(
        &w,
        &format!(
            "write_keys = [\"{short}\"]\nkeys = [{{ name = \"eu\", key = \"{eu}\", source = \"web-eu\" }}]\nmax_batch_messages = 5"
        ),
    );
    let c = w.start_collector();
    let track = |id: &str| json!({"userId": "u-keys", "event": "Clicked", "messageId": id});

    // each key's events get its source, and the event_id prefix follows
    assert_eq!(
        post_with(&w, "/v1/track", &short, &track("k-1")).status,
        200
    );
    assert_eq!(post_with(&w, "/v1/track", &eu, &track("k-1")).status, 200);
    let mut in_body = track("k-2");
    in_body["writeKey"] = json!(eu);
    let r = http::request(
        "POST",
        &w.collector_url("/v1/track"),
        &[("Content-Type", "application/json".into())],
        in_body.to_string().as_bytes(),
    )
    .expect("collector");
    assert_eq!(r.status, 200, "{}", r.body);
    // an unknown key, a key with a typo, and no key: the same answer
    let refusals: Vec<String> = ["nope-nope-nope", &eu[..eu.len() - 1]]
        .iter()
        .map(|k| {
            let r = post_with(&w, "/v1/track", k, &track("k-x"));
            assert_eq!(r.status, 401);
            r.body
        })
        .collect();
    assert_eq!(refusals[0], refusals[1]);
    let batch = json!({"batch": (0..6).map(|i| json!({"type": "track", "userId": "u", "event": "X", "messageId": format!("b-{i}")})).collect::<Vec<_>>()});
    let r = post_with(&w, "/v1/batch", &eu, &batch);
    assert_eq!(r.status, 400);
    assert!(
        error_of(&r).contains("6 messages; the limit is 5"),
        "{}",
        r.body
    );
    // past the hard cap (4 x max_batch_bytes) the body is not read to the end: 413
    let huge = vec![b' '; 2_100_000];
    if let Ok(r) = http::request(
        "POST",
        &w.collector_url("/v1/track"),
        &[("Authorization", basic_auth(&eu))],
        &huge,
    ) {
        assert_eq!(r.status, 413, "{}", r.body);
        assert!(error_of(&r).contains("the limit is 512000"), "{}", r.body);
    }

    // reload: the short key is removed, a key from a file added, the rate limit tightened
    let app = format!("app-{}", w.write_key);
    let app_file = w.dir.path().join("app.key");
    std::fs::write(&app_file, format!("{app}\n")).expect("key file");
    set_collector_keys(
        &w,
        &format!(
            "write_keys = []\nkeys = [{{ name = \"eu\", key = \"{eu}\", source = \"web-eu\" }}, {{ name = \"app\", key = {{ file = \"{}\" }}, source = \"app\" }}]\nrate_limit_per_key = {{ requests_per_sec = 1, burst = 2 }}",
            app_file.display()
        ),
    );
    sighup(&mut w, c);
    // with Basic auth the key is checked before the body: an empty body tells a
    // valid key (400) from a refused one (401) without producing anything
    wait_until(Duration::from_secs(10), "the removed key refused", || {
        post_with(&w, "/v1/track", &short, &json!("not an object")).status == 401
    });
    assert_eq!(post_with(&w, "/v1/track", &app, &track("a-1")).status, 200);
    // the remaining key: its bucket now holds at most 2 requests
    assert_eq!(post_with(&w, "/v1/track", &eu, &track("r-1")).status, 200);
    assert_eq!(post_with(&w, "/v1/track", &eu, &track("r-2")).status, 200);
    let r = post_with(&w, "/v1/track", &eu, &track("r-3"));
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        r.headers.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        r.headers
    );
    assert!(error_of(&r).contains("rate limit"), "{}", r.body);
    let m = http::request("GET", &w.collector_url("/metrics"), &[], b"").expect("metrics");
    assert!(
        m.body
            .contains("socialcrm_collector_rate_limited_total{key=\"eu\"} 1"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("socialcrm_collector_rejected_total{status=\"429\"} 1"),
        "{}",
        m.body
    );

    // a bad reload is refused, with the field named; the keys in force stay
    set_collector_keys(
        &w,
        &format!("write_keys = [\"{short}\"]\nkeys = [{{ name = \"eu\", key = \"short\" }}]"),
    );
    sighup(&mut w, c);
    wait_until(Duration::from_secs(10), "the refused reload logged", || {
        w.log("collector").contains("config reload refused")
    });
    assert!(
        w.log("collector").contains("collector.keys[0] (eu)"),
        "{}",
        w.log("collector")
    );
    std::thread::sleep(Duration::from_millis(1100)); // one token back
    assert_eq!(post_with(&w, "/v1/track", &eu, &track("r-4")).status, 200);
    assert_eq!(
        post_with(&w, "/v1/track", &short, &track("r-5")).status,
        401
    );

    let events = consume_all(&w.topics().events, 7, Duration::from_secs(10));
    let mut got: Vec<(String, String)> = events
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(p).expect("json");
            (
                v["event_id"].as_str().unwrap_or("").to_string(),
                v["source"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("app:a-1", "app"),
        ("web-eu:k-1", "web-eu"),
        ("web-eu:k-2", "web-eu"),
        ("web-eu:r-1", "web-eu"),
        ("web-eu:r-2", "web-eu"),
        ("web-eu:r-4", "web-eu"),
        ("web:k-1", "web"),
    ];
    let got_ref: Vec<(&str, &str)> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(got_ref, want);
    // no key reached the log
    let log = w.log("collector");
    for key in [&eu, &short, &app] {
        assert!(!log.contains(key.as_str()), "{log}");
    }
    assert!(log.contains("collector keys and limits reloaded"), "{log}");
}

/// The local broker's SASL_PLAINTEXT and SASL_SSL listeners and its CA (deploy/local/env.sh).
fn kafka_sasl_brokers() -> String {
    std::env::var("SOCIALCRM_TEST_KAFKA_SASL").unwrap_or_else(|_| "127.0.0.1:9094".into())
}

fn kafka_sasl_ssl_brokers() -> String {
    std::env::var("SOCIALCRM_TEST_KAFKA_SASL_SSL").unwrap_or_else(|_| "127.0.0.1:9095".into())
}

fn kafka_ca_file() -> String {
    std::env::var("SOCIALCRM_TEST_KAFKA_CA")
        .unwrap_or_else(|_| format!("{}/.local/kafka/tls/ca.pem", env!("CARGO_MANIFEST_DIR")))
}

const KAFKA_WRONG_PASSWORD: &str = "wrong-kafka-pass-51c9";

/// The world's config with `[kafka] brokers` replaced and `[kafka.properties]` added.
fn kafka_variant(w: &World, brokers: &str, properties: &str, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(&w.config).expect("config");
    let old = format!("brokers = \"{}\"\n", kafka_brokers());
    assert!(text.contains(&old), "{text}");
    let text = text
        .replace(&old, &format!("brokers = \"{brokers}\"\n"))
        .replace(
            "[clickhouse]\n",
            &format!("[kafka.properties]\n{properties}[clickhouse]\n"),
        );
    let path = w.dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// SCRAM-SHA-256 settings; the password as given (a `${VAR:-default}` is resolved
/// by socialcrm).
fn scram(protocol: &str, password: &str, ca: Option<&str>) -> String {
    let mut p = format!(
        "\"security.protocol\" = \"{protocol}\"\n\"sasl.mechanism\" = \"SCRAM-SHA-256\"\n\"sasl.username\" = \"${{KAFKA_SASL_USER:-crm_sasl}}\"\n\"sasl.password\" = \"{password}\"\n"
    );
    if let Some(ca) = ca {
        p.push_str(&format!("\"ssl.ca.location\" = \"{ca}\"\n"));
    }
    p
}

/// Like [`assert_fails_clearly`], for the Kafka wrong password.
fn assert_kafka_fails_clearly(config: &Path, args: &[&str], wants: &[&str]) -> Duration {
    let t = Instant::now();
    let (ok, stderr) = run_bounded(config, args, Duration::from_secs(60));
    let took = t.elapsed();
    assert!(!ok, "{args:?} succeeded:\n{stderr}");
    for want in wants {
        assert!(stderr.contains(want), "{args:?}: no `{want}` in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    let leaks = common::secrets::scan_text(
        &format!("stderr of {args:?}"),
        &stderr,
        &[common::secrets::Secret {
            key: "kafka.properties.sasl.password".into(),
            value: KAFKA_WRONG_PASSWORD.into(),
        }],
    );
    common::secrets::assert_no_leaks("a wrong Kafka password", &leaks);
    took
}

#[test]
fn kafka_sasl_scram_end_to_end() {
    let mut w = World::new("kafkasasl");
    let sasl = kafka_sasl_brokers();
    let sasl_ssl = kafka_sasl_ssl_brokers();
    let ca = kafka_ca_file();
    let password = "${KAFKA_SASL_PASSWORD:-crm-sasl-pass}";
    for addr in [&sasl, &sasl_ssl] {
        assert!(
            std::net::TcpStream::connect(addr.as_str()).is_ok(),
            "nothing listens on {addr}: the local Kafka has no SASL listeners (started by an \
             older deploy/local/up? restart it: deploy/local/down && deploy/local/up)"
        );
    }
    assert!(
        Path::new(&ca).is_file(),
        "no CA of the local Kafka at {ca} (deploy/local/up makes it; set SOCIALCRM_TEST_KAFKA_CA)"
    );
    let plain = kafka_variant(
        &w,
        &sasl,
        &scram("SASL_PLAINTEXT", password, None),
        "sasl.toml",
    );
    let tls = kafka_variant(
        &w,
        &sasl_ssl,
        &scram("SASL_SSL", password, Some(&ca)),
        "sasl-ssl.toml",
    );

    // a wrong password: every Kafka client process stops at once, naming the settings
    let wrong = kafka_variant(
        &w,
        &sasl,
        &scram("SASL_PLAINTEXT", KAFKA_WRONG_PASSWORD, None),
        "wrong.toml",
    );
    let wants = [
        "[kafka]",
        "authentication failed",
        "SCRAM-SHA-256",
        "check [kafka.properties] sasl.mechanism, sasl.username and sasl.password",
    ];
    for args in [&["collector"][..], &["pipeline"], &["migrate"]] {
        let took = assert_kafka_fails_clearly(&wrong, args, &wants);
        eprintln!("{args:?} with a wrong Kafka password stopped after {took:?}");
        assert!(took < Duration::from_secs(30), "{args:?} took {took:?}");
    }
    // the same over TLS
    let wrong_tls = kafka_variant(
        &w,
        &sasl_ssl,
        &scram("SASL_SSL", KAFKA_WRONG_PASSWORD, Some(&ca)),
        "wrong-tls.toml",
    );
    assert_kafka_fails_clearly(&wrong_tls, &["collector"], &wants);
    // TLS without the private CA: the broker's certificate is refused
    let no_ca = kafka_variant(
        &w,
        &sasl_ssl,
        &scram("SASL_SSL", password, None),
        "no-ca.toml",
    );
    assert_kafka_fails_clearly(
        &no_ca,
        &["collector"],
        &["[kafka]", "TLS handshake failed", "ssl.ca.location"],
    );

    // the right password: migrate over SASL_SSL (topics are there), then the collector
    // on SASL_SSL and the pipeline on SASL_PLAINTEXT. Each process reads the world's
    // config when it starts, so the file is switched between the two starts.
    let out = run_with(&tls, &["migrate"]);
    assert!(
        out.status.success(),
        "migrate over SASL_SSL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(&tls, &w.config).expect("use the SASL_SSL config");
    w.start_collector();
    std::fs::copy(&plain, &w.config).expect("use the SASL_PLAINTEXT config");
    w.start_pipeline();
    let r = w.post(
        "/v1/identify",
        &json!({"userId": "sasl-1", "messageId": "sasl-m1", "traits": {"email": "Sasl@Example.com"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // `lag` and `profile get` go through SASL_PLAINTEXT too
    w.wait_caught_up();
    let p = w.profile_json("email:sasl@example.com");
    assert!(
        profile_identifiers(&p).contains(&"user_id:sasl-1"),
        "profile after collector (SASL_SSL) -> pipeline (SASL_PLAINTEXT): {p}"
    );
    assert_eq!(
        w.query_u64("SELECT count() FROM events FINAL WHERE event_id = 'web:sasl-m1'"),
        1
    );
    // the event really went through the broker: it is on the topic
    let events = consume_all(&w.topics().events, 1, Duration::from_secs(10));
    assert_eq!(events.len(), 1);
    // World's drop scans every log of this test for the configured password
    let keys: Vec<String> = w.secrets().into_iter().map(|s| s.key).collect();
    assert!(
        keys.iter().any(|k| k.contains("sasl.password")),
        "the scan does not know the Kafka password: {keys:?}"
    );
}
