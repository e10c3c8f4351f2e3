//! Hostile input, generated (seeded, deterministic) by the thousand: deep nesting,
//! huge strings near and over the limits, invalid UTF-8, numbers out of range,
//! SQL/HTML/template injection, duplicate keys, wrong types for every field, null
//! bytes and control characters, unknown fields, mutated real messages.
//!
//! - The collector answers each request with a 2xx or a 4xx with a reason (never a
//!   5xx: Kafka is up) and stays up.
//! - The pipeline accepts or dead-letters each raw event exactly as the library's
//!   own validation says, loses none (accepted + DLQ = produced), stays up and
//!   catches up.
//! - What is stored is data: injected names come back verbatim from ClickHouse
//!   (queried by their bytes), no table is dropped, and `GET /v1/profiles?q=`
//!   returns them JSON-escaped. (The web page's escaping is tested by e2e_web.)

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{json, Value};
use socialcrm_schemas::{json_schema, CanonicalEvent, Normalizer};

/// xorshift64*: the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Names and handles that must be stored and shown as data. No leading or trailing
/// blanks (display names are trimmed) and at most 200 characters (search's limit).
const NASTY: &[&str] = &[
    "'; DROP TABLE profiles; --",
    "Robert'); DROP TABLE events;--",
    "\" OR \"1\"=\"1",
    "<script>alert('x')</script>",
    "<img src=x onerror=alert(1)>",
    "</textarea><svg onload=alert(1)>",
    "back\\slash \\' \\\" end\\",
    "? ?? placeholder ?",
    "100% _wild_ card%",
    "{{7*7}} ${7*7} #{7*7}",
    "${jndi:ldap://127.0.0.1/a}",
    "$(id) `id` | id",
    "../../etc/passwd",
    "nul\u{0}byte",
    "tab\there\rcr",
    "\u{1b}[31mred\u{1b}[0m",
    "\u{202e}fdp.exe",
    "Zoë Ñandú 名前 🦀 e\u{301}",
    "line\u{2028}separator",
];

/// Values of the wrong type for any field; `RAW:` ones are spliced into the JSON
/// text as they are (numbers serde_json cannot hold).
const WRONG: &[&str] = &[
    "null",
    "true",
    "0",
    "-1",
    "1.5",
    "\"\"",
    "\" \"",
    "\"x\"",
    "[]",
    "[1,\"a\",null]",
    "{}",
    "{\"a\":{\"b\":[1]}}",
    "RAW:1e400",
    "RAW:-1e400",
    "RAW:-0",
    "RAW:18446744073709551616",
    "RAW:-9223372036854775809",
    "RAW:1e-400",
];

/// Sets `path` (dotted) in `v` to the placeholder `"@@WRONG@@"`.
fn set_path(v: &mut Value, path: &str) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Ok(n) = p.parse::<usize>() {
            if !cur.is_array() {
                *cur = json!([]);
            }
            let a = cur.as_array_mut().expect("array");
            while a.len() <= n {
                a.push(json!({}));
            }
            cur = &mut a[n];
        } else {
            if !cur.is_object() {
                *cur = json!({});
            }
            let o = cur.as_object_mut().expect("object");
            cur = o.entry(p.to_string()).or_insert(json!({}));
        }
        if last {
            *cur = json!("@@WRONG@@");
        }
    }
}

/// `base` with `path` set to each wrong value, as JSON text.
fn wrong_types(base: &Value, path: &str) -> Vec<Vec<u8>> {
    let mut v = base.clone();
    set_path(&mut v, path);
    let text = v.to_string();
    WRONG
        .iter()
        .map(|w| {
            let raw = w.strip_prefix("RAW:").unwrap_or(w);
            text.replace("\"@@WRONG@@\"", raw).into_bytes()
        })
        .collect()
}

/// Nested arrays, `depth` levels, as JSON text.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Seeded mutations of a valid payload: byte flips, deletions, duplications,
/// truncation, hostile tokens spliced in.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"\\u0000",
        b"\\ud800",
        b"\xff",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"1e400",
        b"-0",
        b"null",
        b"\x00",
        b"\"a\":1,",
        b"'; DROP TABLE events; --",
        b"<script>",
    ];
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(3) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len());
        match rng.below(5) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                b.drain(at..end);
            }
            2 => {
                let end = (at + 1 + rng.below(32)).min(b.len());
                let dup = b[at..end].to_vec();
                b.splice(at..at, dup);
            }
            3 => b.truncate(at),
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                b.splice(at..at, t.iter().copied());
            }
        }
    }
    b
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02X}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One request to the collector: path, body, extra headers.
struct Req {
    path: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

fn req(path: &str, body: impl Into<Vec<u8>>) -> Req {
    Req {
        path: path.to_string(),
        body: body.into(),
        headers: Vec::new(),
    }
}

/// The collector's hostile corpus (~2,500 requests).
fn collector_corpus() -> Vec<Req> {
    let mut out = Vec::new();
    let base = json!({"userId": "hostile-u", "anonymousId": "hostile-a", "event": "Clicked",
        "messageId": "m-base", "timestamp": "2026-11-01T10:00:00Z",
        "traits": {"email": "ann@example.com", "phone": "+1 415 555 0123", "name": "Ann"},
        "properties": {"revenue": 12.5, "currency": "EUR", "title": "t"},
        "context": {"traits": {"email": "ann@example.com"}, "device": {"id": "d-1"},
            "page": {"title": "p", "url": "https://shop.example.com/"}, "ip": "198.51.100.7"}});

    // wrong types for every field, on the single-message endpoints and in a batch
    let fields = [
        "type",
        "userId",
        "anonymousId",
        "previousId",
        "groupId",
        "messageId",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "context",
        "traits",
        "properties",
        "event",
        "name",
        "writeKey",
        "integrations",
        "context.traits",
        "context.traits.email",
        "context.device",
        "context.device.id",
        "context.ip",
        "context.page",
        "traits.email",
        "traits.phone",
        "traits.name",
        "properties.revenue",
        "properties.total",
        "properties.currency",
    ];
    for f in fields {
        for (i, body) in wrong_types(&base, f).into_iter().enumerate() {
            let path = ["/v1/identify", "/v1/track", "/v1/page", "/v1/alias"][i % 4];
            out.push(req(path, body));
        }
        let mut batch_base = json!({"batch": [base.clone()]});
        batch_base["batch"][0]["type"] = json!("track");
        for body in wrong_types(&batch_base, &format!("batch.0.{f}")) {
            out.push(req("/v1/batch", body));
        }
    }
    for f in ["batch", "context", "sentAt", "batch.0", "batch.1"] {
        for body in wrong_types(
            &json!({"batch": [{"type": "track", "userId": "u", "event": "e"}]}),
            f,
        ) {
            out.push(req("/v1/batch", body));
        }
    }

    // injection and odd text in every free-text field
    for (i, s) in NASTY.iter().enumerate() {
        for f in [
            "userId",
            "anonymousId",
            "event",
            "name",
            "messageId",
            "traits.name",
            "traits.email",
            "properties.title",
            "context.page.title",
            "context.userAgent",
        ] {
            let mut v = base.clone();
            set_path(&mut v, f);
            let text = v
                .to_string()
                .replace("\"@@WRONG@@\"", &json!(s).to_string());
            out.push(req(["/v1/identify", "/v1/track", "/v1/page"][i % 3], text));
        }
        out.push(req(
            "/v1/identify",
            json!({"userId": format!("{s}@example.com"), "traits": {"email": format!("{s}@example.com")}})
                .to_string(),
        ));
    }

    // structure: nesting, sizes, duplicates, unknown fields, encodings
    for depth in [100, 127, 128, 129, 1000, 10_000] {
        out.push(req(
            "/v1/track",
            format!(
                "{{\"userId\":\"u\",\"event\":\"e\",\"properties\":{{\"deep\":{}}}}}",
                nested(depth)
            ),
        ));
        out.push(req(
            "/v1/track",
            format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
        ));
    }
    let event_limit = 32 * 1024;
    for pad in [
        event_limit - 200,
        event_limit - 80,
        event_limit,
        event_limit + 1,
        400_000,
    ] {
        out.push(req(
            "/v1/track",
            json!({"userId": "u", "event": "e", "properties": {"pad": "x".repeat(pad)}})
                .to_string(),
        ));
    }
    for len in [255, 256, 257, 1000, 100_000] {
        out.push(req(
            "/v1/identify",
            json!({"userId": "u".repeat(len)}).to_string(),
        ));
        out.push(req(
            "/v1/identify",
            json!({"userId": "u", "traits": {"email": format!("{}@example.com", "a".repeat(len))}})
                .to_string(),
        ));
        out.push(req(
            "/v1/page",
            json!({"anonymousId": "a", "name": "n".repeat(len)}).to_string(),
        ));
        out.push(req(
            "/v1/identify",
            json!({"userId": "u", "traits": {"phone": "4".repeat(len)}}).to_string(),
        ));
    }
    // batches near and over the batch limit, and many tiny messages
    let msg = json!({"type": "track", "userId": "u", "event": "e"}).to_string();
    for n in [10, 2500, 2501, 12_000] {
        out.push(req(
            "/v1/batch",
            format!("{{\"batch\":[{}]}}", vec![msg.as_str(); n].join(",")),
        ));
    }
    out.push(req(
        "/v1/batch",
        format!(
            "{{\"batch\":[{{\"type\":\"track\",\"userId\":\"u\",\"event\":\"{}\"}}]}}",
            "e".repeat(600 * 1024)
        ),
    ));
    out.push(req("/v1/track", vec![b' '; 1_500_000]));
    for body in [
        &b"{\"userId\":\"a\",\"userId\":\"b\",\"event\":\"dup\"}"[..],
        b"{\"type\":\"track\",\"type\":\"identify\",\"userId\":\"u\"}",
        b"{\"batch\":[],\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\"}]}",
        b"{\"userId\":\"u\",\"event\":\"e\",\"unknown\":{\"x\":1},\"\":\"\",\"\\u0000\":0}",
        b"{\"userId\":\"u\\u0000\",\"event\":\"e\\u0000\"}",
        b"{\"userId\":\"\\ud800\",\"event\":\"e\"}",
        b"{\"userId\":\"\\udc00\\ud800\",\"event\":\"e\"}",
        b"{\"userId\":\"\xff\xfe\",\"event\":\"e\"}",
        b"{\"userId\":\"\xc0\xaf\",\"event\":\"e\"}",
        b"{\"userId\":\"\xed\xa0\x80\",\"event\":\"e\"}",
        b"{\"userId\":\"\xe2\x82\",\"event\":\"e\"}",
        b"\xef\xbb\xbf{\"userId\":\"u\",\"event\":\"e\"}",
        b"{\"userId\":\"u\",\"event\":\"e\"}\x00",
        b"{\"userId\":\"u\",\"event\":\"e\"} {\"x\":1}",
        b"",
        b" ",
        b"null",
        b"[]",
        b"\"s\"",
        b"{}",
        b"{\"userId\":\"u\",\"event\":\"\x1b[2J\x1b[31mred\"}",
        b"{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":\"2026-13-45T99:99:99Z\"}",
        b"{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":\"+275760-09-13T00:00:00Z\"}",
        b"{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":\"9999-12-31T23:59:59Z\"}",
        b"{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":\"0000-01-01T00:00:00Z\"}",
        b"{\"userId\":\"u\",\"event\":\"Order Completed\",\"properties\":{\"revenue\":1e308,\"currency\":\"EUR\"}}",
        b"{\"userId\":\"u\",\"event\":\"Order Completed\",\"properties\":{\"revenue\":-1e308,\"currency\":\"\\u0000\"}}",
    ] {
        for path in ["/v1/track", "/v1/batch", "/v1/identify"] {
            out.push(req(path, body.to_vec()));
        }
    }
    for path in [
        "/v1/../admin",
        "/v1/",
        "/v1/%00",
        "/v1/TRACK",
        "/v1/track%0d%0aX-Injected:1",
    ] {
        out.push(req(path, msg.as_bytes().to_vec()));
    }
    // a gzip bomb: 30 MB of blanks in ~30 KB
    {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(b"{\"userId\":\"u\",\"event\":\"e\",\"p\":\"")
            .expect("gzip");
        for _ in 0..30 {
            gz.write_all(&vec![b' '; 1024 * 1024]).expect("gzip");
        }
        gz.write_all(b"\"}").expect("gzip");
        let mut r = req("/v1/track", gz.finish().expect("gzip"));
        r.headers.push(("Content-Encoding", "gzip".into()));
        out.push(r);
        let mut r = req("/v1/track", b"\x1f\x8b\x08\x00not gzip at all".to_vec());
        r.headers.push(("Content-Encoding", "gzip".into()));
        out.push(r);
    }

    // mutations of real SDK messages (the bundled sample)
    let sample: Vec<&str> = include_str!("../deploy/sample/web-events.jsonl")
        .lines()
        .collect();
    let mut rng = Rng(0x5EED_C011_EC70_0001);
    for _ in 0..1000 {
        let line = sample[rng.below(sample.len())];
        let path = if rng.below(4) == 0 {
            "/v1/batch"
        } else {
            "/v1/track"
        };
        let body = if path == "/v1/batch" {
            format!("{{\"batch\":[{line}]}}").into_bytes()
        } else {
            line.as_bytes().to_vec()
        };
        out.push(req(path, mutate(&mut rng, &body)));
    }
    out
}

/// Sends `reqs` over `threads` connections at once; the statuses (0: the
/// connection failed).
fn send_all(w: &World, reqs: &[Req], threads: usize) -> Vec<(u16, String)> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(vec![(0u16, String::new()); reqs.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(r) = reqs.get(i) else { break };
                let mut headers = vec![
                    ("Authorization", basic_auth(&w.write_key)),
                    ("Content-Type", "application/json".to_string()),
                ];
                headers.extend(r.headers.iter().cloned());
                let res = match http::request("POST", &w.collector_url(&r.path), &headers, &r.body)
                {
                    Ok(resp) => (resp.status, resp.body),
                    Err(e) => (0, e.to_string()),
                };
                results.lock().expect("results")[i] = res;
            });
        }
    });
    results.into_inner().expect("results")
}

fn config_for_api(w: &World, port: u16) {
    w.append_config(&format!(
        "[collector.rate_limit_per_key]\nrequests_per_sec = 0\n\
         [scoring]\ninterval_secs = 0\n\
         [api]\nlisten = \"127.0.0.1:{port}\"\n\
         keys = [{{ name = \"t\", key = \"hostile-api-key-1\", scopes = [\"read\"] }}]\n"
    ));
}

#[test]
fn collector_answers_thousands_of_hostile_requests_and_stores_names_as_data() {
    let mut w = World::new("hostile_http");
    let port = free_port();
    config_for_api(&w, port);
    let collector = w.start_collector();
    w.start_pipeline();
    let tables_before =
        w.query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name");

    // people whose names are hostile: each identify must be accepted
    for (i, name) in NASTY.iter().enumerate() {
        let r = w.post(
            "/v1/identify",
            &json!({"userId": format!("hostile-name-{i}"), "messageId": format!("hn-{i}"),
                "traits": {"name": name, "email": format!("hostile{i}@example.com")}}),
        );
        assert_eq!(r.status, 200, "identify with name {name:?}: {}", r.body);
        let r = w.post(
            "/v1/track",
            &json!({"userId": format!("hostile-name-{i}"), "messageId": format!("he-{i}"), "event": name}),
        );
        assert_eq!(r.status, 200, "track named {name:?}: {}", r.body);
    }

    let corpus = collector_corpus();
    assert!(corpus.len() >= 2000, "{} requests", corpus.len());
    let started = std::time::Instant::now();
    let answers = send_all(&w, &corpus, 4);
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    for (r, (status, body)) in corpus.iter().zip(&answers) {
        *by_status.entry(*status).or_default() += 1;
        let big = r.body.len() > 1024 * 1024;
        let ok = match status {
            200..=299 => true,
            // a reason in JSON; a body over the hard cap may be cut off by the HTTP
            // layer with a plain-text reason
            400..=499 => {
                serde_json::from_str::<Value>(body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(|e| !e.trim().is_empty()))
                    .unwrap_or(false)
                    || (big && !body.trim().is_empty())
            }
            // the server may close a connection that sends megabytes it will refuse
            0 => big,
            _ => false,
        };
        if !ok {
            bad.push(format!(
                "{} {} -> {status} {}",
                r.path,
                String::from_utf8_lossy(&r.body[..r.body.len().min(200)]),
                &body[..body.len().min(300)]
            ));
        }
    }
    eprintln!(
        "{} hostile requests in {:.1} s, answers by status: {by_status:?}",
        corpus.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        bad.is_empty(),
        "{} unclear answers, e.g.:\n{}",
        bad.len(),
        bad[..bad.len().min(15)].join("\n")
    );
    assert!(
        by_status.get(&200).copied().unwrap_or(0) > 100,
        "{by_status:?}"
    );
    assert!(
        by_status.get(&400).copied().unwrap_or(0) > 1000,
        "{by_status:?}"
    );

    // other methods and paths: a reason, not an empty answer
    for (method, path) in [
        ("GET", "/v1/track"),
        ("PUT", "/v1/batch"),
        ("DELETE", "/health"),
        ("GET", "/"),
    ] {
        let r =
            http::request(method, &w.collector_url(path), &[], b"").expect("collector reachable");
        assert!(
            matches!(r.status, 404 | 405),
            "{method} {path}: {}",
            r.status
        );
        let v: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", r.body));
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {v}"
        );
    }

    // still up, still accepting
    assert!(
        w.child(collector)
            .try_wait()
            .expect("collector status")
            .is_none(),
        "collector exited: {}",
        w.log("collector")
    );
    assert!(http::blocking_get_ok(&w.collector_url("/health")));
    let r = w.post(
        "/v1/track",
        &json!({"userId": "after", "event": "still up", "messageId": "after-1"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // stored as data: every table is still there, names come back byte for byte
    w.wait_caught_up();
    let tables_after =
        w.query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name");
    assert_eq!(tables_after, tables_before, "tables changed");
    for (i, name) in NASTY.iter().enumerate() {
        let stored = w.query(&format!(
            "SELECT hex(display_name) FROM profiles FINAL WHERE display_name = unhex('{}')",
            hex(name)
        ));
        assert_eq!(
            unhex(stored.lines().next().unwrap_or_default()),
            name.as_bytes(),
            "profile name {name:?}: {stored:?}"
        );
        let n = w.query_u64(&format!(
            "SELECT count() FROM events FINAL WHERE event_id = 'web:he-{i}' AND name = unhex('{}')",
            hex(name)
        ));
        assert_eq!(n, 1, "event named {name:?}");
    }

    // the API finds them and answers JSON with them escaped
    let base = w.start_api(port);
    for name in NASTY {
        let url = format!("{base}/v1/profiles?q={}", percent_encode(name));
        let r = http::get_with_key(&url, "hostile-api-key-1");
        assert_eq!(r.status, 200, "search {name:?}: {}", r.body);
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            r.headers
        );
        assert!(
            !r.body.bytes().any(|b| b < 0x20),
            "raw control characters in {:?}",
            r.body
        );
        let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
        let names: Vec<&str> = v["items"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(names.contains(name), "search {name:?} found {names:?}");
    }
}

/// A valid canonical event (`n` makes its id and actor unique).
fn event(n: usize) -> Value {
    json!({"schema_version": 1, "event_id": format!("hostile:{n:06}"), "source": "hostile",
        "channel": "web", "type": "track", "name": "e",
        "occurred_at": "2026-11-01T10:00:00Z", "received_at": "2026-11-01T10:00:01Z",
        "identifiers": [{"type": "user_id", "value": format!("hu-{n}")},
            {"type": "email", "value": format!("h{n}@example.com")}],
        "traits": {"name": "H"}, "properties": {"k": 1}, "context": {"ip": "198.51.100.7"}})
}

/// The pipeline's hostile corpus (~3,000 raw events) and the names of the
/// accepted ones whose text must be stored verbatim (event id → name).
fn pipeline_corpus() -> (Vec<Vec<u8>>, BTreeMap<String, String>) {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut names = BTreeMap::new();
    let mut n = 0usize;
    let mut next = || {
        n += 1;
        event(n)
    };
    let fields = [
        "schema_version",
        "event_id",
        "source",
        "channel",
        "type",
        "name",
        "occurred_at",
        "received_at",
        "identifiers",
        "identifiers.0",
        "identifiers.0.type",
        "identifiers.0.value",
        "target",
        "claimed",
        "traits",
        "traits.name",
        "properties",
        "context",
        "revenue",
        "revenue.amount",
        "revenue.currency",
        "target.0.value",
    ];
    for f in fields {
        out.extend(wrong_types(&next(), f));
    }
    for f in [
        "event_id",
        "source",
        "channel",
        "type",
        "occurred_at",
        "received_at",
        "identifiers",
        "schema_version",
    ] {
        let mut v = next();
        v.as_object_mut().expect("object").remove(f);
        out.push(v.to_string().into_bytes());
    }
    for (i, s) in NASTY.iter().enumerate() {
        // accepted: the name, a trait, a property and a user id carry the text
        let mut v = next();
        let id = format!("hostile:nasty:{i}");
        v["event_id"] = json!(id);
        v["name"] = json!(s);
        v["traits"]["name"] = json!(s);
        v["properties"]["q"] = json!(s);
        v["identifiers"][0]["value"] = json!(format!("nasty-{i}-{s}"));
        out.push(v.to_string().into_bytes());
        names.insert(id, s.to_string());
        // refused or not as validation says: the text in the tokens
        for f in [
            "event_id",
            "source",
            "type",
            "channel",
            "identifiers.0.type",
        ] {
            let mut v = next();
            set_path(&mut v, f);
            out.push(
                v.to_string()
                    .replace("\"@@WRONG@@\"", &json!(s).to_string())
                    .into_bytes(),
            );
        }
    }
    for depth in [100, 126, 127, 128, 129, 10_000] {
        let v = next().to_string();
        out.push(
            v.replacen(
                "\"properties\":{",
                &format!("\"properties\":{{\"deep\":{},", nested(depth)),
                1,
            )
            .into_bytes(),
        );
        out.push(
            v.replacen(
                "\"traits\":{",
                &format!("\"traits\":{{\"deep\":{},", nested(depth)),
                1,
            )
            .into_bytes(),
        );
    }
    for (field, lens) in [
        ("event_id", [511, 512, 513]),
        ("source", [127, 128, 129]),
        ("type", [63, 64, 65]),
        ("name", [511, 512, 513]),
        ("identifiers.0.value", [255, 256, 257]),
    ] {
        for len in lens {
            let mut v = next();
            set_path(&mut v, field);
            let text = if field == "type" {
                "t".repeat(len)
            } else {
                "x".repeat(len)
            };
            out.push(
                v.to_string()
                    .replace("\"@@WRONG@@\"", &json!(text).to_string())
                    .into_bytes(),
            );
        }
    }
    for pad in [60_000, 65_000, 65_536, 70_000, 300_000] {
        let mut v = next();
        v["properties"]["pad"] = json!("p".repeat(pad));
        out.push(v.to_string().into_bytes());
    }
    let dup = next().to_string();
    out.push(
        dup.replacen("{", "{\"event_id\":\"dup:first\",", 1)
            .into_bytes(),
    );
    out.push(
        dup.replacen("\"traits\":{", "\"traits\":{\"name\":\"first\",", 1)
            .into_bytes(),
    );
    out.push(
        dup.replacen("\"context\":{", "\"unknown\":1,\"context\":{", 1)
            .into_bytes(),
    );
    out.push(
        dup.replacen(
            "{\"type\":\"user_id\"",
            "{\"extra\":true,\"type\":\"user_id\"",
            1,
        )
        .into_bytes(),
    );
    let v = next().to_string();
    for (from, to) in [
        ("\"name\":\"e\"", "\"name\":\"e\\u0000\\u001b[31m\""),
        ("\"source\":\"hostile\"", "\"source\":\"hos\\u0000tile\""),
        ("\"name\":\"e\"", "\"name\":\"\\ud800\""),
        ("\"name\":\"e\"", "\"name\":\"\u{feff}e\""),
        ("\"schema_version\":1", "\"schema_version\":1.0"),
        ("\"schema_version\":1", "\"schema_version\":4294967297"),
        ("\"schema_version\":1", "\"schema_version\":1e400"),
        (
            "\"occurred_at\":\"2026-11-01T10:00:00Z\"",
            "\"occurred_at\":\"2026-11-01T10:00:00+25:00\"",
        ),
        (
            "\"occurred_at\":\"2026-11-01T10:00:00Z\"",
            "\"occurred_at\":\"9999-12-31T23:59:59Z\"",
        ),
        (
            "\"occurred_at\":\"2026-11-01T10:00:00Z\"",
            "\"occurred_at\":\"1969-12-31T23:59:59Z\"",
        ),
        ("\"properties\":{\"k\":1}", "\"properties\":{\"k\":1e400}"),
        (
            "\"properties\":{\"k\":1}",
            "\"properties\":{\"k\":-0,\"big\":123456789012345678901234567890}",
        ),
        ("\"properties\":{\"k\":1}", "\"properties\":[1]"),
        (
            "\"context\":{\"ip\":\"198.51.100.7\"}",
            "\"context\":{\"ip\":\"\\u0000' OR 1=1\"}",
        ),
        (
            "\"traits\":{\"name\":\"H\"}",
            "\"traits\":{\"name\":\"H\",\"revenue\":{\"amount\":1e308}}",
        ),
    ] {
        out.push(v.replacen(from, to, 1).into_bytes());
    }
    for rev in [
        "{\"amount\":1e308,\"currency\":\"EUR\"}",
        "{\"amount\":-0,\"currency\":\"EUR\"}",
        "{\"amount\":1,\"currency\":\"eur\"}",
        "{\"amount\":1,\"currency\":\"EURO\"}",
        "{\"amount\":1e400,\"currency\":\"EUR\"}",
        "{\"amount\":\"1\",\"currency\":\"EUR\"}",
    ] {
        let mut v = next();
        v["revenue"] = json!("@@WRONG@@");
        out.push(v.to_string().replace("\"@@WRONG@@\"", rev).into_bytes());
    }
    for raw in [
        &b"\xff\xfe\xfd"[..],
        b"\xc3\x28",
        b"{\"schema_version\":1,\"event_id\":\"\xed\xa0\x80\"}",
        b"",
        b"null",
        b"[]",
        b"{}",
        b"\x00\x00\x00\x00",
    ] {
        out.push(raw.to_vec());
    }
    // mutations of valid events, and random bytes
    let mut rng = Rng(0x005E_ED0F_E7E4_7001);
    let bases: Vec<Vec<u8>> = (0..50).map(|_| next().to_string().into_bytes()).collect();
    for _ in 0..2000 {
        let b = &bases[rng.below(bases.len())];
        out.push(mutate(&mut rng, b));
    }
    for _ in 0..100 {
        let len = rng.below(200);
        out.push((0..len).map(|_| rng.next() as u8).collect());
    }
    (out, names)
}

fn metric(w: &World, line_start: &str) -> u64 {
    w.pipeline_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|f| f as u64)
        .unwrap_or(0)
}

#[test]
fn pipeline_accepts_or_dead_letters_thousands_of_hostile_events_and_loses_none() {
    let mut w = World::new("hostile_raw");
    let t = w.topics();
    let (corpus, names) = pipeline_corpus();
    assert!(corpus.len() >= 2500, "{} events", corpus.len());

    // what the library's own validation says about each
    let normalizer = Normalizer::new(Some("US")).expect("region");
    let now: DateTime<Utc> = Utc::now();
    let mut expected_ok: BTreeSet<String> = BTreeSet::new();
    let mut expected_code: HashMap<Vec<u8>, Vec<&'static str>> = HashMap::new();
    for p in &corpus {
        match CanonicalEvent::parse_and_validate(p, &normalizer, now) {
            Ok((ev, _)) => {
                expected_ok.insert(ev.event_id);
            }
            Err(e) => expected_code.entry(p.clone()).or_default().push(e.code()),
        }
    }
    let n_bad: usize = expected_code.values().map(Vec::len).sum();
    let n_ok = corpus.len() - n_bad;
    assert!(n_ok > 150 && n_bad > 1500, "{n_ok} valid, {n_bad} invalid");
    for id in names.keys() {
        assert!(expected_ok.contains(id), "{id} should be valid");
    }

    let tables_before =
        w.query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name");
    let msgs: Vec<(String, Vec<u8>)> = corpus
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("k{}", i % 97), p.clone()))
        .collect();
    produce_raw(&t.events, &msgs);
    let pipeline = w.start_pipeline();
    w.wait_caught_up();
    assert!(
        w.child(pipeline)
            .try_wait()
            .expect("pipeline status")
            .is_none(),
        "pipeline exited: {}",
        w.log("pipeline")
    );

    // nothing lost: every message accepted (a repeated event_id as a duplicate of
    // the first) or dead-lettered, once
    let accepted = metric(&w, "socialcrm_pipeline_events_total{outcome=\"accepted\"} ") as usize;
    let duplicates = metric(
        &w,
        "socialcrm_pipeline_events_total{outcome=\"duplicate\"} ",
    ) as usize;
    let dlq = consume_all(&t.dlq, n_bad, Duration::from_secs(60));
    assert_eq!(
        accepted + duplicates + dlq.len(),
        corpus.len(),
        "accepted {accepted} + duplicates {duplicates} + DLQ {} != produced {}",
        dlq.len(),
        corpus.len()
    );
    assert_eq!(
        accepted,
        expected_ok.len(),
        "accepted: one per distinct event_id"
    );
    assert_eq!(accepted + duplicates, n_ok, "valid events");

    // each refusal is the one validation gives, with a reason and the original bytes
    let payloads: Vec<Vec<u8>> = dlq.iter().filter_map(|(_, p)| p.clone()).collect();
    let parsed = assert_all_valid(json_schema::DLQ, &payloads, "crm.dlq");
    let mut unmatched = Vec::new();
    for m in &parsed {
        use base64::Engine;
        assert!(!m["reason"].as_str().unwrap_or("").trim().is_empty(), "{m}");
        let original = match (m["original"].as_str(), m["original_base64"].as_str()) {
            (Some(t), _) => t.as_bytes().to_vec(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .expect("base64"),
            _ => panic!("no original in {m}"),
        };
        let code = m["error_code"].as_str().unwrap_or("");
        let truncated = m["original_truncated"] == true;
        let hit = expected_code.iter_mut().find(|(k, codes)| {
            (if truncated {
                k.starts_with(&original)
            } else {
                **k == original
            }) && codes.contains(&code)
        });
        match hit {
            Some((_, codes)) => {
                let at = codes.iter().position(|c| *c == code).expect("code");
                codes.remove(at);
            }
            None => unmatched.push(format!(
                "{code}: {}",
                &String::from_utf8_lossy(&original)[..original.len().min(200)]
            )),
        }
    }
    assert!(
        unmatched.is_empty(),
        "DLQ messages validation did not predict:\n{}",
        unmatched.join("\n")
    );
    assert!(
        expected_code.values().all(Vec::is_empty),
        "refused events missing from the DLQ"
    );

    // accepted events are stored once each, their text byte for byte
    let stored = w.query_u64("SELECT count() FROM events FINAL");
    assert_eq!(
        stored as usize,
        expected_ok.len(),
        "distinct accepted events in ClickHouse"
    );
    let rows = w.query(
        "SELECT event_id, hex(name) FROM events FINAL WHERE event_id LIKE 'hostile:nasty:%'",
    );
    let got: BTreeMap<String, Vec<u8>> = rows
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, h)| (id.to_string(), unhex(h)))
        .collect();
    for (id, name) in &names {
        assert_eq!(
            got.get(id).map(Vec::as_slice),
            Some(name.as_bytes()),
            "{id}"
        );
        if name.chars().any(char::is_control) {
            continue; // such a user id is refused (the email identifier carries the event)
        }
        let n = w.query_u64(&format!(
            "SELECT count() FROM events FINAL WHERE has(identifier_values, unhex('{}'))",
            hex(&format!("nasty-{}-{name}", &id["hostile:nasty:".len()..]))
        ));
        assert_eq!(n, 1, "identifier of {id}");
    }
    let tables_after =
        w.query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name");
    assert_eq!(tables_after, tables_before, "tables changed");

    // still alive: a later good event is processed
    produce_raw(
        &t.events,
        &[("late".into(), event(999_999).to_string().into_bytes())],
    );
    wait_until(Duration::from_secs(60), "late event", || {
        w.query_u64("SELECT count() FROM events FINAL WHERE event_id = 'hostile:999999'") == 1
    });
}
