//! Harness of the end-to-end tests: real Kafka and ClickHouse (hosts from
//! `SOCIALCRM_TEST_KAFKA` / `SOCIALCRM_TEST_CLICKHOUSE`, loopback by default), a
//! random database and topic prefix per test, and the real `socialcrm` binary run
//! as child processes.

#![allow(dead_code)]

pub mod connectors;
pub mod secrets;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, TopicPartitionList};

pub fn kafka_brokers() -> String {
    std::env::var("SOCIALCRM_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("SOCIALCRM_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One isolated test world.
pub struct World {
    pub name: String,
    pub db: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub collector_addr: String,
    /// The pipeline's `/metrics` address.
    pub metrics_addr: String,
    pub write_key: String,
    children: Vec<Child>,
}

pub struct Topics {
    pub events: String,
    pub dlq: String,
    pub identity: String,
    pub profiles: String,
    pub commands: String,
    pub privacy_commands: String,
}

impl World {
    /// A new database and topic prefix; migrates both.
    pub fn new(name: &str) -> World {
        Self::with_pipeline_settings(name, "")
    }

    /// `extra_pipeline` is appended to the `[pipeline]` section.
    pub fn with_pipeline_settings(name: &str, extra_pipeline: &str) -> World {
        Self::build(name, extra_pipeline, &clickhouse_url())
    }

    /// A world whose socialcrm processes reach ClickHouse at `ch_url` (e.g. a proxy).
    pub fn with_clickhouse_url(name: &str, extra_pipeline: &str, ch_url: &str) -> World {
        Self::build(name, extra_pipeline, ch_url)
    }

    fn build(name: &str, extra_pipeline: &str, ch_url: &str) -> World {
        let tag: u32 = rand::random();
        let db = format!("crm_t_{name}_{tag:08x}");
        let prefix = format!("t{tag:08x}.");
        let dir = tempfile::tempdir().expect("tempdir");
        let collector_addr = format!("127.0.0.1:{}", free_port());
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let write_key = format!("test-key-{tag:x}");
        let state = dir.path().join("state");
        let config = dir.path().join("socialcrm.toml");
        let toml = format!(
            r#"[kafka]
brokers = "{brokers}"
event_partitions = 3
[kafka.topics]
events = "{prefix}crm.events"
dlq = "{prefix}crm.dlq"
identity = "{prefix}crm.identity"
profiles = "{prefix}crm.profiles"
commands = "{prefix}crm.identity.commands"
privacy_commands = "{prefix}crm.privacy.commands"
[clickhouse]
url = "{ch}"
database = "{db}"
[collector]
listen = "{collector_addr}"
write_keys = ["{write_key}"]
default_phone_region = "US"
[pipeline]
group_id = "{prefix}pipeline"
state_dir = "{state}"
batch_max_wait_ms = 200
metrics_listen = "{metrics_addr}"
{extra_pipeline}
[identity]
default_phone_region = "US"
"#,
            brokers = kafka_brokers(),
            ch = ch_url,
            state = state.display(),
        );
        std::fs::write(&config, toml).expect("write config");
        let w = World {
            name: name.to_string(),
            db,
            prefix,
            dir,
            config,
            collector_addr,
            metrics_addr,
            write_key,
            children: Vec::new(),
        };
        let out = w.cli(&["migrate"]);
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        w
    }

    pub fn topics(&self) -> Topics {
        Topics {
            events: format!("{}crm.events", self.prefix),
            dlq: format!("{}crm.dlq", self.prefix),
            identity: format!("{}crm.identity", self.prefix),
            profiles: format!("{}crm.profiles", self.prefix),
            commands: format!("{}crm.identity.commands", self.prefix),
            privacy_commands: format!("{}crm.privacy.commands", self.prefix),
        }
    }

    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_socialcrm")
    }

    /// Runs a CLI command to completion. Its stderr is also appended to `cli.log`,
    /// so that the secrets scan on drop covers the CLI's errors.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(Self::bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run socialcrm");
        if !out.stderr.is_empty() {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path("cli"))
            {
                let _ = f.write_all(&out.stderr);
            }
        }
        out
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts a long-running subcommand; its stderr goes to `<name>.log`.
    pub fn spawn(&mut self, name: &str, args: &[&str]) -> usize {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .expect("log file");
        let child = Command::new(Self::bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn socialcrm");
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn child(&mut self, i: usize) -> &mut Child {
        &mut self.children[i]
    }

    /// Starts the collector and waits until it answers.
    pub fn start_collector(&mut self) -> usize {
        let i = self.spawn("collector", &["collector"]);
        let url = format!("http://{}/health", self.collector_addr);
        wait_until(Duration::from_secs(30), "collector up", || {
            http::blocking_get_ok(&url)
        });
        i
    }

    pub fn start_pipeline(&mut self) -> usize {
        self.spawn("pipeline", &["pipeline"])
    }

    /// Starts `socialcrm serve` (the config's `[api] listen` must be
    /// `127.0.0.1:<port>`) and waits until it answers; its base URL.
    pub fn start_api(&mut self, port: u16) -> String {
        self.spawn("serve", &["serve"]);
        let base = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(30), "API up", || {
            http::blocking_get_ok(&format!("{base}/health"))
        });
        base
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// A ClickHouse query in this world's database; TSV text.
    pub fn query(&self, sql: &str) -> String {
        ch_query(&self.db, sql)
    }

    pub fn query_u64(&self, sql: &str) -> u64 {
        let t = self.query(sql);
        t.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number from {sql}: {t:?}"))
    }

    /// The pipeline's `/metrics` text (Prometheus).
    pub fn pipeline_metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics_addr);
        let r = http::request("GET", &url, &[], b"").expect("pipeline /metrics reachable");
        assert_eq!(r.status, 200, "GET {url}: {}", r.body);
        r.body
    }

    pub fn collector_url(&self, path: &str) -> String {
        format!("http://{}{}", self.collector_addr, path)
    }

    /// POSTs a JSON body to the collector with the world's write key.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> http::Resp {
        http::request(
            "POST",
            &self.collector_url(path),
            &[
                ("Authorization", basic_auth(&self.write_key)),
                ("Content-Type", "application/json".into()),
            ],
            body.to_string().as_bytes(),
        )
        .expect("collector reachable")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var("SOCIALCRM_TEST_KEEP").is_err() {
            let _ = ch_query("default", &format!("DROP DATABASE IF EXISTS {}", self.db));
        }
        // every world checks that the processes it ran logged none of its secrets
        // (not while a failed test unwinds: a second panic would abort)
        if !std::thread::panicking() {
            self.assert_no_secret_in_logs();
        }
    }
}

/// Minimal blocking HTTP helpers built on std (tests stay synchronous).
pub mod http {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// Response status and body.
    pub struct Resp {
        pub status: u16,
        pub body: String,
        pub headers: String,
    }

    fn split(url: &str) -> (String, String) {
        let rest = url.strip_prefix("http://").expect("http url");
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .unwrap_or((rest, "/".into()));
        (host.to_string(), path)
    }

    /// One HTTP/1.1 request with `Connection: close`.
    pub fn request(
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let (host, path) = split(url);
        let mut s = TcpStream::connect(&host)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok(Resp {
            status,
            body,
            headers: head.to_string(),
        })
    }

    fn dechunk(mut s: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = s.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || rest.len() < n {
                break;
            }
            out.push_str(&rest[..n]);
            s = rest[n..].trim_start_matches("\r\n");
        }
        out
    }

    /// A GET with an API key (`Authorization: Bearer <key>`).
    pub fn get_with_key(url: &str, key: &str) -> Resp {
        request(
            "GET",
            url,
            &[("Authorization", format!("Bearer {key}"))],
            b"",
        )
        .expect("server reachable")
    }

    pub fn blocking_get_ok(url: &str) -> bool {
        request("GET", url, &[], b"")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    }
}

/// Runs `sql` against ClickHouse over HTTP; panics with the server's message on error.
pub fn ch_query(db: &str, sql: &str) -> String {
    let url = format!("{}/?database={db}", clickhouse_url());
    let r = http::request("POST", &url, &[], sql.as_bytes()).expect("clickhouse reachable");
    assert_eq!(r.status, 200, "clickhouse error for {sql}: {}", r.body);
    r.body
}

/// Polls `cond` until true or panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `identifiers` (`type:value` strings) of a `profile get --json` answer.
/// The `event_id`s of a profile's `recent_events`, in order.
pub fn recent_event_ids(p: &serde_json::Value) -> Vec<&str> {
    p["recent_events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["event_id"].as_str()).collect())
        .unwrap_or_default()
}

pub fn profile_identifiers(p: &serde_json::Value) -> Vec<&str> {
    p["identifiers"]
        .as_array()
        .expect("identifiers")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect()
}

pub fn basic_auth(key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// Produces raw payloads with keys; waits for every acknowledgement.
pub fn produce_raw(topic: &str, msgs: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        for chunk in msgs.chunks(10_000) {
            let futs = chunk.iter().map(|(k, p)| {
                producer.send(FutureRecord::to(topic).key(k).payload(p), Timeout::Never)
            });
            for r in futures::future::join_all(futs).await {
                r.expect("delivered");
            }
        }
    });
}

/// Reads every message currently in `topic` (from the beginning, all partitions).
pub fn consume_all(
    topic: &str,
    min: usize,
    timeout: Duration,
) -> Vec<(Option<String>, Option<Vec<u8>>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", format!("reader-{}", rand::random::<u32>()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .expect("tpl");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let start = Instant::now();
    let mut idle = Instant::now();
    while start.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle = Instant::now();
                out.push((
                    m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    m.payload().map(<[u8]>::to_vec),
                ));
            }
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => {
                if out.len() >= min && idle.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
        }
    }
    out
}

/// A JSON Schema validator for one of the schemas in `schemas/json`.
pub fn validator(schema: &str) -> jsonschema::Validator {
    let v: serde_json::Value = serde_json::from_str(schema).expect("schema is JSON");
    jsonschema::validator_for(&v).expect("valid schema")
}

/// Asserts that every payload validates; returns them parsed.
pub fn assert_all_valid(schema: &str, payloads: &[Vec<u8>], what: &str) -> Vec<serde_json::Value> {
    let val = validator(schema);
    payloads
        .iter()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(p).expect("json payload");
            if let Err(e) = val.validate(&v) {
                panic!("{what} message does not match its schema: {e}\n{v}");
            }
            v
        })
        .collect()
}

/// A TCP proxy whose upstream can be cut and restored, to play a dependency that
/// goes down: while down, new connections are accepted and closed at once, and
/// open ones are cut.
pub struct FlakyProxy {
    pub addr: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyProxy {
    pub fn start(upstream: &str) -> FlakyProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = down.clone();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        use std::io::{Read, Write};
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if flag.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        FlakyProxy { addr, down }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}
