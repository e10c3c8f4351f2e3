//! No secrets or full tokens in logs, errors or the DLQ (docs/privacy.md, "Secrets
//! in logs"). A world configured with recognisable secrets (collector write key, API
//! keys, the privacy salt, a refused X bearer token and Telegram bot token; a
//! ClickHouse password and a Kafka SASL password in variants of the config that
//! fail) runs the collector, the pipeline, the API, two connectors and failing CLI
//! commands through good and bad requests; then every log file, every CLI error,
//! every HTTP answer and every DLQ message is scanned for each secret, as written,
//! base64 (any alignment, so inside a Basic header too) and URL- or JSON-escaped.
//! (Every other end-to-end world scans its own logs on drop, `tests/common/secrets.rs`.)

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::secrets::{assert_no_leaks, config_secrets, scan_files, scan_text, Secret};
use common::*;
use serde_json::json;
use socialcrm_connectors::testkit::BlockingFakeServer;

const WRITE_KEY: &str = "wk-E2E/S3cret+write=key&1";
const API_KEY: &str = "api-E2E/S3cret+read=key&2";
const API_ADMIN_KEY: &str = "api-E2E/S3cret+admin=key&3";
const SALT: &str = "salt-E2E/S3cret+salt=4";
const X_TOKEN: &str = "x-E2E-S3cret-bearer/+=5-AAAAAAAAAAAAAAAAAAAA";
const TG_TOKEN: &str = "7100200300:AAE2ES3cretTelegramToken-6";
const CH_PASSWORD: &str = "ch-E2E/S3cret+password=7";
const KAFKA_PASSWORD: &str = "kafka-E2E/S3cret+password=8";

/// Runs the binary with another config until it exits or `limit` passes; stderr
/// goes to `<name>.log` in the world's directory.
fn run_variant(w: &World, name: &str, config: &Path, args: &[&str], limit: Duration) {
    let log = std::fs::File::create(w.log_path(name)).expect("log");
    let mut child = std::process::Command::new(World::bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn no_configured_secret_reaches_a_log_an_error_an_answer_or_the_dlq() {
    let mut w = World::new("secrets");
    // the world's write key, replaced by one with characters that encodings change
    let cfg = std::fs::read_to_string(&w.config).expect("config");
    let cfg = cfg.replace(
        &format!("write_keys = [\"{}\"]", w.write_key),
        &format!("write_keys = [\"{WRITE_KEY}\"]"),
    );
    std::fs::write(&w.config, cfg).expect("config");
    w.write_key = WRITE_KEY.to_string();
    let api_port = free_port();
    w.append_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{api_port}\"\n\
         keys = [{{ name = \"reader\", key = \"{API_KEY}\", scopes = [\"read\"] }},\n\
                 {{ name = \"admin\", key = \"{API_ADMIN_KEY}\", scopes = [\"read\", \"export\", \"admin\"] }}]\n\
         [privacy]\nsalt = \"{SALT}\"\nhash_identifier_types = [\"email\"]\n"
    ));
    let x = BlockingFakeServer::start(|| {
        socialcrm_connectors::x::fake::router(socialcrm_connectors::x::fake::generate(5, 1))
    });
    w.add_connector(
        "x_refused",
        &format!(
            "type = \"x\"\napi_url = \"{}\"\nbearer_token = \"{X_TOKEN}\"\nuser_id = \"{}\"",
            x.base_url,
            socialcrm_connectors::x::fake::BRAND_ID
        ),
    );
    let tg = BlockingFakeServer::start(|| {
        socialcrm_connectors::telegram::fake::router(
            socialcrm_connectors::telegram::fake::FakeData::generate(5, 1),
        )
    });
    w.add_connector(
        "tg_refused",
        &format!(
            "type = \"telegram\"\napi_url = \"{}\"\nbot_token = \"{TG_TOKEN}\"\nlong_poll_secs = 0",
            tg.base_url
        ),
    );
    let secrets = w.secrets();
    let named: Vec<&str> = secrets.iter().map(|s| s.key.as_str()).collect();
    for key in [
        "api.keys[0].key",
        "api.keys[1].key",
        "collector.write_keys[0]",
        "connectors.tg_refused.bot_token",
        "connectors.x_refused.bearer_token",
        "privacy.salt",
    ] {
        assert!(named.contains(&key), "the scan misses {key}: {named:?}");
    }

    w.start_collector();
    let pipeline = w.start_pipeline();
    let mut answers = String::new();
    let mut post = |key: &str, path: &str, body: serde_json::Value| {
        // an empty key: no Authorization header at all
        let mut headers = vec![("Content-Type", "application/json".to_string())];
        if !key.is_empty() {
            headers.push(("Authorization", basic_auth(key)));
        }
        let r = http::request(
            "POST",
            &w.collector_url(path),
            &headers,
            body.to_string().as_bytes(),
        )
        .expect("collector");
        answers.push_str(&format!("{path} {} {} {}\n", r.status, r.headers, r.body));
        r.status
    };
    // good calls, a wrong key, no key, a bad payload that carries the key in its body
    let ok = json!({"userId": "u-1", "traits": {"email": "ann@example.com"}, "messageId": "s1"});
    assert_eq!(post(WRITE_KEY, "/v1/identify", ok), 200);
    let batch =
        json!({"batch": [{"type": "track", "event": "A", "userId": "u-1", "messageId": "s2"}]});
    assert_eq!(post(WRITE_KEY, "/v1/batch", batch), 200);
    let any = json!({"userId": "u-2", "messageId": "s3"});
    assert_eq!(post("wk-wrong-key-E2E", "/v1/identify", any.clone()), 401);
    assert_eq!(post("", "/v1/identify", any), 401);
    let bad =
        json!({"writeKey": WRITE_KEY, "userId": ["not", "a", "string"], "timestamp": "never"});
    assert_eq!(post("", "/v1/identify", bad), 400);
    // events the pipeline refuses: they go to the DLQ
    let t = w.topics();
    produce_raw(
        &t.events,
        &[
            ("k1".into(), b"not json at all".to_vec()),
            (
                "k2".into(),
                br#"{"schema_version": 1, "event_id": "x"}"#.to_vec(),
            ),
            (
                "k3".into(),
                json!({"schema_version": 1, "event_id": "bad:1", "source": "s", "channel": "web",
                    "type": "page", "occurred_at": "2026-01-01T00:00:00Z",
                    "received_at": "2026-01-01T00:00:00Z",
                    "identifiers": [{"type": "email", "value": "noreply@example.com"}]})
                .to_string()
                .into_bytes(),
            ),
        ],
    );
    w.wait_caught_up();

    // the API: right and wrong keys, a scope it lacks, a lookup through the salt
    let base = w.start_api(api_port);
    for (key, path, want) in [
        (API_KEY, "/v1/profiles/lookup?id=email:ann@example.com", 200),
        (
            API_KEY,
            "/v1/profiles/lookup?id=email:nobody@example.com",
            404,
        ),
        (API_KEY, "/v1/profiles/lookup?id=email:not-an-email", 400),
        (
            "api-wrong-key-E2E-000",
            "/v1/profiles/lookup?id=user_id:u-1",
            401,
        ),
        (API_KEY, "/v1/segments/export.csv", 403),
        (API_ADMIN_KEY, "/v1/segments/count", 200),
    ] {
        let r = http::get_with_key(&format!("{base}{path}"), key);
        assert_eq!(r.status, want, "{path}: {}", r.body);
        answers.push_str(&format!("{path} {} {} {}\n", r.status, r.headers, r.body));
    }

    // two connectors whose tokens the APIs refuse (one in a header, one in the URL)
    for name in ["x_refused", "tg_refused"] {
        let out = w.run_connector_once(name, &[]);
        assert!(
            !out.status.success(),
            "{name}: a refused token must fail the run"
        );
        let log = w.log(&format!("connector-{name}"));
        assert!(log.contains("401"), "{name}: {log}");
        answers.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    // CLI errors: an unknown identifier, bad input
    assert!(!w
        .cli(&["profile", "get", "email:nobody@example.com"])
        .status
        .success());
    assert!(!w.cli(&["profile", "get", "emial:x"]).status.success());
    w.cli_ok(&["profile", "get", "email:ann@example.com"]);

    // a pipeline started under another salt is refused (the store remembers)
    let _ = w.child(pipeline).kill();
    let _ = w.child(pipeline).wait();
    let base_cfg = std::fs::read_to_string(&w.config).expect("config");
    let other_salt = "salt-E2E/S3cret+other=9";
    let salted = w.dir.path().join("other-salt.toml");
    std::fs::write(&salted, base_cfg.replace(SALT, other_salt)).expect("variant");
    run_variant(
        &w,
        "pipeline-other-salt",
        &salted,
        &["pipeline"],
        Duration::from_secs(60),
    );
    assert!(
        w.log("pipeline-other-salt").contains("[privacy]"),
        "{}",
        w.log("pipeline-other-salt")
    );
    // a ClickHouse password the server refuses, a Kafka SASL password the broker cannot check
    let ch = w.dir.path().join("ch-password.toml");
    std::fs::write(
        &ch,
        base_cfg.replace(
            "[clickhouse]\n",
            &format!("[clickhouse]\npassword = \"{CH_PASSWORD}\"\n"),
        ),
    )
    .expect("variant");
    run_variant(
        &w,
        "cli-ch-password",
        &ch,
        &["profile", "get", "user_id:u-1"],
        Duration::from_secs(60),
    );
    assert!(
        !w.log("cli-ch-password").trim().is_empty(),
        "the refused password gave no error"
    );
    let kafka = w.dir.path().join("kafka-sasl.toml");
    std::fs::write(
        &kafka,
        format!(
            "{base_cfg}\n[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
             \"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"e2e\"\n\"sasl.password\" = \"{KAFKA_PASSWORD}\"\n"
        ),
    )
    .expect("variant");
    run_variant(
        &w,
        "lag-kafka-sasl",
        &kafka,
        &["lag"],
        Duration::from_secs(20),
    );

    // the scan: every secret of every config used, in every log, answer and DLQ message
    let mut all: Vec<Secret> = secrets.clone();
    for variant in [&salted, &ch, &kafka] {
        all.extend(config_secrets(
            &std::fs::read_to_string(variant).expect("variant"),
        ));
    }
    for (key, value) in [
        ("clickhouse.password", CH_PASSWORD),
        ("kafka.properties.sasl.password", KAFKA_PASSWORD),
        ("privacy.salt (variant)", other_salt),
    ] {
        assert!(
            all.iter().any(|s| s.value == value),
            "the scan misses {key}"
        );
    }
    let logs = w.log_files();
    for expected in [
        "collector.log",
        "pipeline.log",
        "serve.log",
        "cli.log",
        "connector-x_refused.log",
    ] {
        assert!(
            logs.iter().any(|p| p.ends_with(expected)),
            "{expected} missing from {logs:?}"
        );
    }
    assert_no_leaks("logs", &scan_files(&logs, &all));
    assert_no_leaks(
        "HTTP answers and connector output",
        &scan_text("answers", &answers, &all),
    );
    let dlq = consume_all(&t.dlq, 3, Duration::from_secs(20));
    assert!(dlq.len() >= 3, "{} DLQ messages", dlq.len());
    let dlq_text: String = dlq
        .iter()
        .map(|(k, v)| {
            format!(
                "{} {}\n",
                k.clone().unwrap_or_default(),
                String::from_utf8_lossy(v.as_deref().unwrap_or_default())
            )
        })
        .collect();
    assert_no_leaks("crm.dlq", &scan_text(&t.dlq, &dlq_text, &all));

    // negative control: the same scan finds a secret written the way a careless
    // log line would carry it (an HTTP Basic header) in a log file of this world
    let planted = w.log_path("planted");
    std::fs::write(
        &planted,
        format!(
            "request headers: {{authorization: {}}}\n",
            basic_auth(WRITE_KEY)
        ),
    )
    .expect("plant");
    let found = scan_files(std::slice::from_ref(&planted), &all);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "collector.write_keys[0]");
    assert_eq!((found[0].line, found[0].form), (1, "base64"));
    std::fs::remove_file(&planted).expect("unplant");
}

#[test]
fn the_scan_finds_every_configured_secret_and_its_encodings() {
    let cfg = r#"
[kafka.properties]
"sasl.password" = "kafka-Pa55word~~?"
"sasl.username" = "not-a-secret-user"
[clickhouse]
password = "short"
[collector]
write_keys = ["wk-S3cret/one+two"]
[api]
keys = [{ name = "ops-team", key = "api-Secret=1&2", scopes = ["read"] }]
[privacy]
salt = "${NO_SUCH_VAR_FOR_TEST:-salt-from-default-123}"
[connectors.tg]
bot_token = "7100200300:AAsecret"
"#;
    let s = config_secrets(cfg);
    let keys: Vec<&str> = s.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "api.keys[0].key",
            "collector.write_keys[0]",
            "connectors.tg.bot_token",
            "kafka.properties.sasl.password",
            "privacy.salt"
        ]
    );
    assert_eq!(s[4].value, "salt-from-default-123");
    let b64 = |t: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(t)
    };
    let log = format!(
        "ok\nAuthorization: {}\nGET /x?k=wk-S3cret%2Fone%2Btwo\n{{\"k\":\"api-Secret=1&2\"}}\nprefix{}\nurl-safe {}\n",
        basic_auth("wk-S3cret/one+two"),
        b64("xx7100200300:AAsecret"),
        b64("?kafka-Pa55word~~?").replace('+', "-").replace('/', "_"),
    );
    let leaks = scan_text("t.log", &log, &s);
    let found: Vec<(usize, &str)> = leaks.iter().map(|l| (l.line, l.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (2, "collector.write_keys[0]"),
            (3, "collector.write_keys[0]"),
            (4, "api.keys[0].key"),
            (5, "connectors.tg.bot_token"),
            (6, "kafka.properties.sasl.password"),
        ],
        "{leaks:?}"
    );
    assert!(scan_text("t.log", "nothing here\nshort\nsalt-from-defaul\n", &s).is_empty());
    let forms: Vec<&str> = leaks.iter().map(|l| l.form).collect();
    assert_eq!(
        forms,
        ["base64", "URL-encoded", "as written", "base64", "base64url"]
    );
}

#[test]
#[should_panic(expected = "configured secrets leaked")]
fn a_world_fails_on_drop_when_one_of_its_logs_holds_its_secret() {
    let w = World::new("secrets_drop");
    // as a process would log it: the write key inside an HTTP Basic header
    std::fs::write(
        w.log_path("collector"),
        format!(
            "debug headers: authorization: {}\n",
            basic_auth(&w.write_key)
        ),
    )
    .expect("log");
    drop(w);
}
