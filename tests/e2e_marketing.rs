//! Marketers' questions end to end: canonical events through the real pipeline into
//! ClickHouse 18.16, a scoring run, then the CLI (`segment`, `top`, `report`) and the
//! HTTP API (`socialcrm serve`) checked against answers computed by hand, and
//! against each other (one query layer, so the CSV of both must be identical).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn at(days_ago: f64) -> String {
    let t = chrono::Utc::now() - chrono::Duration::seconds((days_ago * 86_400.0) as i64);
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

struct Ev {
    id: &'static str,
    channel: &'static str,
    typ: &'static str,
    days_ago: f64,
    email: &'static str,
    extra: Value,
}

fn ev(e: Ev) -> (String, Vec<u8>) {
    let mut v = json!({
        "schema_version": 1,
        "event_id": e.id,
        "source": if e.channel == "social" { "mastodon:m.social" } else if e.channel == "shop" { "shopify:s1" } else { "web" },
        "channel": e.channel,
        "type": e.typ,
        "occurred_at": at(e.days_ago),
        "received_at": at(0.0),
        "identifiers": [{"type": "email", "value": e.email}],
    });
    if let Value::Object(m) = e.extra {
        for (k, x) in m {
            v[k.as_str()] = x;
        }
    }
    (e.id.to_string(), serde_json::to_vec(&v).expect("json"))
}

fn campaign(name: &str) -> Value {
    json!({"campaign": {"name": name, "source": "newsletter", "medium": "email"}})
}

fn order(
    email: &'static str,
    id: &'static str,
    days_ago: f64,
    amount: f64,
    currency: &str,
    lines: Value,
    ctx: Value,
) -> (String, Vec<u8>) {
    ev(Ev {
        id,
        channel: "shop",
        typ: "order",
        days_ago,
        email,
        extra: json!({"revenue": {"amount": amount, "currency": currency}, "properties": {"line_items": lines}, "context": ctx}),
    })
}

fn social(
    email: &'static str,
    id: &'static str,
    typ: &'static str,
    days_ago: f64,
) -> (String, Vec<u8>) {
    ev(Ev {
        id,
        channel: "social",
        typ,
        days_ago,
        email,
        extra: json!({"target": [{"type": "mastodon", "value": "@brand@m.social"}]}),
    })
}

/// ann: named, a mastodon handle, plan pro; a spring touch, then an order that
/// carries its own summer UTM; three mentions of the brand.
/// bob: a spring touch, then two orders. cat: a USD order without campaign, a
/// reshare, and a name that a spreadsheet would run as a formula.
fn world() -> Vec<(String, Vec<u8>)> {
    vec![
        ev(Ev {
            id: "m:ann:identify",
            channel: "web",
            typ: "identify",
            days_ago: 40.0,
            email: "ann@example.com",
            extra: json!({
                "identifiers": [{"type": "email", "value": "ann@example.com"}, {"type": "mastodon", "value": "@ann@m.social"}],
                "traits": {"name": "Ann Lee", "plan": "pro"},
            }),
        }),
        ev(Ev {
            id: "m:ann:page",
            channel: "web",
            typ: "page",
            days_ago: 20.0,
            email: "ann@example.com",
            extra: json!({"context": campaign("spring")}),
        }),
        order(
            "ann@example.com",
            "m:ann:order",
            10.0,
            60.0,
            "EUR",
            json!([{"product_id": "p1", "title": "Trail shoe", "category": "shoes", "quantity": 2, "unit_price": 30.0}]),
            campaign("summer"),
        ),
        social("ann@example.com", "m:ann:mention1", "mention", 9.0),
        social("ann@example.com", "m:ann:mention2", "mention", 8.0),
        social("ann@example.com", "m:ann:mention3", "mention", 7.0),
        ev(Ev {
            id: "m:bob:identify",
            channel: "web",
            typ: "identify",
            days_ago: 35.0,
            email: "bob@example.com",
            extra: json!({"traits": {"name": "Bob Stone", "plan": "free"}}),
        }),
        ev(Ev {
            id: "m:bob:page",
            channel: "web",
            typ: "page",
            days_ago: 30.0,
            email: "bob@example.com",
            extra: json!({"context": campaign("spring")}),
        }),
        order(
            "bob@example.com",
            "m:bob:order1",
            25.0,
            100.0,
            "EUR",
            json!([{"product_id": "p2", "title": "Sun hat", "category": "hats", "quantity": 1, "total": 100.0}]),
            json!({}),
        ),
        order(
            "bob@example.com",
            "m:bob:order2",
            5.0,
            40.0,
            "EUR",
            json!([{"product_id": "p1", "title": "Trail shoe", "category": "shoes", "quantity": 1, "unit_price": 40.0}]),
            json!({}),
        ),
        ev(Ev {
            id: "m:cat:identify",
            channel: "shop",
            typ: "identify",
            days_ago: 50.0,
            email: "cat@example.com",
            extra: json!({"traits": {"name": "=HYPERLINK(\"http://x\")"}}),
        }),
        order(
            "cat@example.com",
            "m:cat:order",
            3.0,
            15.0,
            "USD",
            json!([]),
            json!({}),
        ),
        social("cat@example.com", "m:cat:reshare", "reshare", 2.0),
    ]
}

fn cli_json(w: &World, args: &[&str]) -> Value {
    let out = w.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn cli_text(w: &World, args: &[&str]) -> String {
    let out = w.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn segments_leaderboards_and_reports_match_hand_computed_answers() {
    let mut w = World::new("marketing");
    let port = free_port();
    w.append_config(&format!(
        "[scoring]\ninterval_secs = 0\napply_poll_secs = 1\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n\
         keys = [{{ name = \"t\", key = \"test-key-123\", scopes = [\"read\", \"export\"] }}]\n\
         [api.campaign_costs]\nspring = {{ cost = 100.0, currency = \"EUR\" }}\n"
    ));
    let evs = world();
    let n = evs.len() as u64;
    produce_raw(&w.topics().events, &evs);
    w.start_pipeline();
    wait_until(Duration::from_secs(120), "events in ClickHouse", || {
        w.query_u64("SELECT count() FROM events FINAL") == n
    });
    w.wait_caught_up();
    let run = cli_json(&w, &["score", "run", "--json"]);
    let run_id = run["run_id"].as_str().expect("run_id").to_string();
    // the pipeline stores the run's scores (rfm_segment, affinities) on the profiles
    wait_until(Duration::from_secs(60), "scores on profiles", || {
        w.query_u64(&format!(
            "SELECT count() FROM v_profiles WHERE visitParamExtractString(score_components, 'run_id') = '{run_id}'"
        )) == 3
    });

    // campaigns: ann's order — spring (day 20) first, its own summer UTM last;
    // bob's two orders — spring both ways; cat's USD order — no campaign
    let c = cli_json(&w, &["report", "campaigns", "--json"]);
    let by: std::collections::BTreeMap<&str, &Value> = c["campaigns"]
        .as_array()
        .expect("campaigns")
        .iter()
        .map(|x| (x["campaign"].as_str().unwrap_or(""), x))
        .collect();
    let spring = by["spring"];
    assert_eq!(spring["touches"], 2);
    assert_eq!(spring["customers"], 2);
    assert_eq!(
        spring["revenue"]["EUR"]["first_touch"],
        json!({"orders": 3, "revenue": 200.0})
    );
    assert_eq!(
        spring["revenue"]["EUR"]["last_touch"],
        json!({"orders": 2, "revenue": 140.0})
    );
    // ROI = (revenue − cost) / cost with the configured cost of 100 EUR
    assert_eq!(
        spring["roi"],
        json!({"first_touch": 1.0, "last_touch": 0.4})
    );
    let summer = by["summer"];
    assert_eq!(summer["touches"], 1);
    assert_eq!(
        summer["revenue"]["EUR"]["last_touch"],
        json!({"orders": 1, "revenue": 60.0})
    );
    assert_eq!(
        summer["revenue"]["EUR"]["first_touch"],
        json!({"orders": 0, "revenue": 0.0})
    );
    assert_eq!(
        c["unattributed_orders"]["USD"]["last_touch"],
        json!({"orders": 1, "revenue": 15.0})
    );

    // products: shoes 2×30 (ann) + 1×40 (bob); hat 100 (bob)
    let p = cli_json(&w, &["report", "products", "--json"]);
    let products = p["products"].as_array().expect("products");
    assert_eq!(products.len(), 2, "{p}");
    assert_eq!(products[0]["product_id"], "p1");
    assert_eq!(products[0]["name"], "Trail shoe");
    assert_eq!(products[0]["units"], 3.0);
    assert_eq!(products[0]["orders"], 2);
    assert_eq!(products[0]["revenue"], 100.0);
    assert_eq!(products[1]["product_id"], "p2");
    assert_eq!(products[1]["revenue"], 100.0);
    let cats: Vec<(&str, f64)> = p["categories"]
        .as_array()
        .expect("categories")
        .iter()
        .map(|x| {
            (
                x["category"].as_str().unwrap_or(""),
                x["revenue"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    assert_eq!(cats, [("hats", 100.0), ("shoes", 100.0)]);

    // distributions: web ann+bob, shop all three, social ann+cat
    let d = cli_json(&w, &["report", "distributions", "--json"]);
    let channels: Vec<(String, u64)> = d["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|x| {
            (
                x["key"].as_str().unwrap_or("").to_string(),
                x["customers"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        channels,
        [
            ("shop".to_string(), 3),
            ("social".to_string(), 2),
            ("web".to_string(), 2)
        ]
    );

    // advocates: ann 3 mentions × 4, cat 1 reshare × 4 (default type weights)
    let a = cli_json(&w, &["top", "advocates", "--json"]);
    let items = a["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{a}");
    assert_eq!(items[0]["name"], "Ann Lee");
    assert_eq!(items[0]["advocacy"], 12.0);
    assert_eq!(items[0]["actions"], 3);
    assert_eq!(items[0]["handles"], json!(["mastodon:@ann@m.social"]));
    assert_eq!(items[1]["advocacy"], 4.0);
    let a = cli_json(&w, &["top", "advocates", "--network", "mastodon", "--json"]);
    assert_eq!(a["items"].as_array().map(Vec::len), Some(1));

    // influencers: every scored customer, best first
    let i = cli_json(&w, &["top", "influencers", "--json"]);
    let scores: Vec<f64> = i["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|x| x["influence_score"].as_f64().unwrap_or(-1.0))
        .collect();
    assert_eq!(scores.len(), 3);
    assert!(scores.windows(2).all(|p| p[0] >= p[1]), "{scores:?}");
    // the run's stored leaderboards (overall and per network) give exactly the list
    // ranked from all of the run's scores (a limit above LEADERBOARD_ROWS)
    assert_eq!(
        w.query_u64(&format!(
            "SELECT count() FROM influencer_ranks WHERE run_id = '{run_id}' AND network = ''"
        )),
        3
    );
    for net in [None, Some("mastodon")] {
        let mut short = vec!["top", "influencers", "--json"];
        let mut long = vec!["top", "influencers", "--json", "--limit", "1001"];
        if let Some(n) = net {
            short.extend(["--network", n]);
            long.extend(["--network", n]);
        }
        let (short, long) = (cli_json(&w, &short), cli_json(&w, &long));
        // nobody here has a network figure (e2e_web ranks a network's list)
        let n = short["items"].as_array().map_or(0, Vec::len);
        assert_eq!(n, if net.is_none() { 3 } else { 0 }, "{short}");
        assert_eq!(short, long, "{net:?}");
    }

    // segments
    let count = |args: &[&str]| -> u64 {
        let mut a = vec!["segment", "count"];
        a.extend_from_slice(args);
        cli_text(&w, &a).trim().parse().expect("count")
    };
    assert_eq!(count(&[]), 3);
    assert_eq!(count(&["--min-orders", "1"]), 3);
    assert_eq!(count(&["--min-orders", "2"]), 1);
    assert_eq!(count(&["--channels", "web,shop"]), 2);
    assert_eq!(count(&["--has-identifier", "mastodon"]), 1);
    assert_eq!(count(&["--trait", "plan:pro"]), 1);
    assert_eq!(
        count(&["--trait", "plan:pro", "--trait", "name:Bob Stone"]),
        0
    );
    assert_eq!(count(&["--category", "hats"]), 1);
    assert_eq!(count(&["--active-within-days", "4"]), 1); // cat's reshare, 2 days ago
    assert_eq!(count(&["--inactive-for-days", "6"]), 1); // ann: last seen 7 days ago
    let out = w.cli(&["segment", "count", "--engagement-min", "120"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("from 0 to 100"));

    let csv_path = w.log_path("segment").with_extension("csv");
    let csv_arg = csv_path.to_string_lossy().to_string();
    cli_text(
        &w,
        &[
            "segment",
            "export",
            "--min-orders",
            "1",
            "--sort",
            "customer_id",
            "-o",
            &csv_arg,
        ],
    );
    let csv_cli = std::fs::read_to_string(&csv_path).expect("csv");
    let lines: Vec<&str> = csv_cli.lines().collect();
    assert_eq!(lines.len(), 4, "{csv_cli}");
    assert!(lines[0].starts_with("customer_id,name,email,phone,"));
    assert!(csv_cli.contains(",Ann Lee,ann@example.com,"), "{csv_cli}");
    // a formula in a name is neutralised for spreadsheets
    assert!(
        csv_cli.contains(",\"'=HYPERLINK(\"\"http://x\"\")\",cat@example.com,"),
        "{csv_cli}"
    );

    // the HTTP API answers the same questions from the same queries
    w.spawn("serve", &["serve"]);
    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(30), "API up", || {
        http::blocking_get_ok(&format!("{base}/health"))
    });
    let get = |path: &str| {
        let r = http::request(
            "GET",
            &format!("{base}{path}"),
            &[("Authorization", "Bearer test-key-123".to_string())],
            b"",
        )
        .expect("request");
        (r.status, r.body)
    };
    let (st, body) = get("/v1/segments/export.csv?min_orders=1&sort=customer_id");
    assert_eq!(st, 200);
    assert_eq!(body, csv_cli, "CSV over HTTP equals the CLI's");
    let (st, body) = get("/v1/reports/campaigns");
    assert_eq!(st, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json"), c);
    let (st, body) = get("/v1/segments/count?channels=web,shop&trait=plan:pro");
    assert_eq!((st, body.contains("\"count\":1")), (200, true), "{body}");
    let (st, body) = get("/v1/segments/preview?lifecycle=nonexistent");
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["count"],
        0
    );

    // search: a name part, an email prefix, a handle with its @
    for (q, who) in [
        ("lee", "Ann Lee"),
        ("bob%40", "Bob Stone"),
        ("%40ann", "Ann Lee"),
    ] {
        let (st, body) = get(&format!("/v1/profiles?q={q}"));
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let names: Vec<&str> = v["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|x| x["name"].as_str())
            .collect();
        assert_eq!(names, [who], "q={q}");
    }
    // a profile with its scores and recent events (newest first)
    let (st, body) = get("/v1/profiles/lookup?id=email:ANN@example.com");
    assert_eq!(st, 200, "{body}");
    let prof: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(prof["display_name"], "Ann Lee");
    assert_eq!(prof["scores"]["run_id"], run_id.as_str());
    assert!(
        prof["scores"]["components"]["engagement"].is_object(),
        "{prof}"
    );
    let evs: Vec<&str> = prof["recent_events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(
        evs,
        [
            "m:ann:mention3",
            "m:ann:mention2",
            "m:ann:mention1",
            "m:ann:order",
            "m:ann:page",
            "m:ann:identify"
        ]
    );
    let (st, body) = get(&format!(
        "/v1/profiles/{}/ledger",
        prof["customer_id"].as_str().unwrap_or("")
    ));
    assert_eq!(st, 200);
    assert!(body.contains("\"action\":\"create\""), "{body}");
    // clear errors
    let (st, body) = get("/v1/profiles/lookup?id=email:nobody@example.com");
    assert_eq!(st, 404, "{body}");
    let (st, body) = get("/v1/profiles/lookup?id=nonsense");
    assert_eq!(st, 400);
    assert!(body.contains("type:value"), "{body}");
    let (st, body) = get("/v1/top/influencers?limit=0");
    assert_eq!(st, 400);
    assert!(body.contains("`limit` must be from 1 to"), "{body}");
    let (st, body) = get("/v1/whoami");
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"name": "t", "scopes": ["read", "export"]})
    );
    let (st, _) = get("/v1/nothing");
    assert_eq!(st, 404);
}
