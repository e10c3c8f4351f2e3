//! A local stand-in for Shopify's GraphQL Admin API (tests and benchmarks).
//!
//! Serves `POST /admin/api/<version>/graphql.json` as Shopify documents it: the
//! `X-Shopify-Access-Token` header is checked (401 with Shopify's body when wrong),
//! the `customers` and `orders` connections honour `first`, `after`, `sortKey:
//! UPDATED_AT` and the `updated_at:>='…'` filter, with `pageInfo { hasNextPage
//! endCursor }`; orders carry at most `$lineItems` line items (the rest through
//! `order(id) { lineItems(after:) }`) and `$refunds` refunds; every answer has
//! `extensions.cost` with the requested and actual cost and the bucket's
//! `throttleStatus`. Optional: a leaky bucket that answers `THROTTLED` (HTTP 200)
//! when a query does not fit, scopes that answer `ACCESS_DENIED`.
//!
//! Bulk operations as documented: `bulkOperationRunQuery` (a `BulkRun` mutation
//! with the bulk query in `$query`) answers `CREATED` and snapshots the objects the
//! query selects; `bulkOperation(id:)` (API 2026-01 and newer) or `node(id:)`
//! answers `RUNNING` for [`BulkOptions::polls_until_done`] polls, then `COMPLETED`
//! with `objectCount`, `rootObjectCount`, `fileSize` and a `url` on the fake's own
//! server (`/bulk-results/<n>.jsonl?sig=…`), which serves the JSONL result
//! (pre-rendered lines: an order's line items follow it with `__parentId`) and
//! honours `Range: bytes=N-`. Before 2026-01 only one bulk query runs at a time.
//! [`BulkOptions`] injects failures: a `FAILED` operation, `userErrors`, a malformed
//! line, a truncated download, an expired result.
//!
//! [`FakeData`] is a shared handle: keep a clone to add or change objects while the
//! server runs.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Map, Value};
use socialcrm_schemas::Normalizer;

use super::client::{self, MAX_QUERY_COST};
use super::config::{default_api_version, BulkMode, Config};
use super::mapping::{self, MapCtx};
use crate::runtime::config::Secret;

/// The shop [`test_config`] names.
pub const FAKE_SHOP: &str = "eu-store.myshopify.com";
/// The token the fake accepts by default.
pub const FAKE_TOKEN: &str = "shpat_fake_0123456789abcdef";

/// A config pointing at a fake server.
pub fn test_config(base_url: &str) -> Config {
    Config {
        shop: FAKE_SHOP.to_string(),
        access_token: Some(Secret::new(FAKE_TOKEN)),
        api_version: default_api_version(),
        api_url: base_url.to_string(),
        page_size: 50,
        orders_page_size: 8,
        line_items_per_order: 10,
        overlap_secs: 0,
        include_test_orders: false,
        // the tests of the paged queries; bulk tests and the benchmark set it
        bulk: BulkMode::Never,
        bulk_threshold_secs: 86_400,
        bulk_page_size: 100,
    }
}

/// Leaky bucket of the simulated app/store pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub maximum: f64,
    pub restore_rate: f64,
}

/// What the fake saw.
#[derive(Debug, Default)]
pub struct FakeStats {
    /// GraphQL queries answered (any outcome).
    pub queries: AtomicUsize,
    /// Queries answered `THROTTLED`.
    pub throttled: AtomicUsize,
    /// `OrderLineItems` and `OrderRefunds` follow-ups.
    pub follow_ups: AtomicUsize,
    /// Bulk operations started.
    pub bulk_runs: AtomicUsize,
    /// Polls of bulk operations.
    pub bulk_polls: AtomicUsize,
    /// Downloads of bulk results started (any outcome).
    pub downloads: AtomicUsize,
}

/// How the fake's bulk operations behave (tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BulkOptions {
    /// Polls answered `RUNNING` before the operation ends.
    pub polls_until_done: u32,
    /// End operations `FAILED` with this `errorCode` (`TIMEOUT`, ...).
    pub fail_with: Option<String>,
    /// Answer `bulkOperationRunQuery` with this user error (`code`, `message`).
    pub refuse: Option<(String, String)>,
    /// Replace this line (1-based) of each result by text that is not JSON.
    pub malformed_line: Option<u64>,
    /// The next download ends after this many bytes of what it serves.
    pub truncate_next_at: Option<u64>,
    /// Downloads wait this long before each block of 64 KiB (a slow link).
    pub block_delay: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
struct Node {
    updated: DateTime<Utc>,
    num: u64,
    gid: String,
    /// The node as served (parsed again when it must be cut or followed up: a
    /// large generated store stays small in memory).
    json: Arc<str>,
    /// Its lines in a bulk result (an order's line items follow it, with
    /// `__parentId`), newline-terminated.
    jsonl: Arc<str>,
    line_items: usize,
    refunds: usize,
}

/// A node as a bulk result holds it: the node without its `lineItems`
/// connection, then each line item with `__parentId`.
fn bulk_lines(value: &Value) -> String {
    let mut root = value.clone();
    let items = root
        .as_object_mut()
        .and_then(|o| o.remove("lineItems"))
        .and_then(|mut li| li.get_mut("nodes").map(Value::take));
    let mut out = root.to_string();
    out.push('\n');
    if let Some(Value::Array(items)) = items {
        let parent = value.get("id").cloned().unwrap_or(Value::Null);
        for mut item in items {
            if let Some(o) = item.as_object_mut() {
                o.insert("__parentId".into(), parent.clone());
            }
            out.push_str(&item.to_string());
            out.push('\n');
        }
    }
    out
}

impl Node {
    fn new(value: Value) -> Node {
        let updated = mapping::node_updated_at(&value).unwrap_or(DateTime::UNIX_EPOCH);
        let gid = value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let num = gid
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let line_items = value
            .pointer("/lineItems/nodes")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let refunds = value
            .get("refunds")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let json: Arc<str> = Arc::from(value.to_string());
        let jsonl = Arc::from(bulk_lines(&value).as_str());
        Node {
            updated,
            num,
            gid,
            json,
            jsonl,
            line_items,
            refunds,
        }
    }

    fn value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    fn key(&self) -> (DateTime<Utc>, u64) {
        (self.updated, self.num)
    }
}

/// One bulk operation of the fake.
#[derive(Debug)]
struct FakeOp {
    num: u64,
    created_at: DateTime<Utc>,
    /// Polls so far.
    polls: u32,
    status: &'static str,
    error_code: Option<String>,
    /// Read `read_*` scope missing when it ran.
    denied: bool,
    /// The result: pre-rendered chunks (a node's lines each).
    chunks: Arc<Vec<Arc<str>>>,
    size: u64,
    objects: u64,
    roots: u64,
    /// The link's signature (an expired result refuses it).
    sig: String,
}

#[derive(Debug)]
struct Inner {
    token: String,
    scopes: Vec<String>,
    bucket: Option<Bucket>,
    customers: Vec<Node>,
    orders: Vec<Node>,
    order_index: HashMap<String, usize>,
    bulk: BulkOptions,
    ops: Vec<FakeOp>,
}

impl Inner {
    fn sort(&mut self) {
        self.customers.sort_by_key(Node::key);
        self.orders.sort_by_key(Node::key);
        self.order_index = self
            .orders
            .iter()
            .enumerate()
            .map(|(i, n)| (n.gid.clone(), i))
            .collect();
    }
}

/// The store's objects and the fake's settings (a shared handle).
#[derive(Debug, Clone)]
pub struct FakeData {
    inner: Arc<RwLock<Inner>>,
    pub stats: Arc<FakeStats>,
}

impl FakeData {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A store with no objects.
    pub fn empty() -> FakeData {
        FakeData {
            inner: Arc::new(RwLock::new(Inner {
                token: FAKE_TOKEN.to_string(),
                scopes: vec!["read_customers".into(), "read_orders".into()],
                bucket: None,
                customers: Vec::new(),
                orders: Vec::new(),
                order_index: HashMap::new(),
                bulk: BulkOptions {
                    polls_until_done: 1,
                    ..BulkOptions::default()
                },
                ops: Vec::new(),
            })),
            stats: Arc::new(FakeStats::default()),
        }
    }

    /// The accepted access token.
    pub fn set_token(&self, token: &str) {
        self.write().token = token.to_string();
    }
    /// The app's scopes (`read_customers`, `read_orders`).
    pub fn set_scopes(&self, scopes: &[&str]) {
        self.write().scopes = scopes.iter().map(|s| s.to_string()).collect();
    }
    /// Simulate the leaky bucket (answers `THROTTLED` when a query does not fit).
    pub fn set_bucket(&self, bucket: Option<Bucket>) {
        self.write().bucket = bucket;
    }

    /// How bulk operations behave from now on.
    pub fn set_bulk(&self, options: BulkOptions) {
        self.write().bulk = options;
    }

    /// The results of every bulk operation so far expire (status `EXPIRED`, links
    /// refused).
    pub fn expire_bulk_results(&self) {
        for op in &mut self.write().ops {
            op.status = "EXPIRED";
            op.sig = "expired".into();
        }
    }

    /// Adds (or replaces, by `id`) a customer node as the API returns it; may be
    /// malformed.
    pub fn push_customer(&self, node: Value) {
        let mut g = self.write();
        let n = Node::new(node);
        g.customers.retain(|c| c.gid.is_empty() || c.gid != n.gid);
        g.customers.push(n);
        g.sort();
    }

    /// Adds (or replaces, by `id`) an order node (response shape, with every line
    /// item and refund); may be malformed.
    pub fn push_order(&self, node: Value) {
        let mut g = self.write();
        let n = Node::new(node);
        g.orders.retain(|c| c.gid.is_empty() || c.gid != n.gid);
        g.orders.push(n);
        g.sort();
    }

    /// Every customer node, in sync order.
    pub fn customers(&self) -> Vec<Value> {
        self.read().customers.iter().map(Node::value).collect()
    }

    /// Every order node, complete, in sync order.
    pub fn orders(&self) -> Vec<Value> {
        self.read().orders.iter().map(Node::value).collect()
    }

    /// The event ids one clean sync of everything produces with `cfg`, computed by
    /// the connector's mapping (events that fail validation excluded, as the
    /// runtime sends those to the DLQ).
    pub fn expected_event_ids(&self, cfg: &Config) -> BTreeSet<String> {
        let normalizer = Normalizer::default();
        let source = format!("shopify:{}", cfg.shop);
        let now = Utc::now();
        let ctx = MapCtx {
            shop: &cfg.shop,
            source: &source,
            received_at: now,
            include_test_orders: cfg.include_test_orders,
            normalizer: &normalizer,
        };
        let mut events = Vec::new();
        for c in self.customers() {
            if let Ok(ev) = mapping::map_customer(&c, &ctx) {
                events.push(ev);
            }
        }
        for o in self.orders() {
            events.extend(mapping::map_order(&o, &ctx).events);
        }
        events
            .into_iter()
            .filter_map(|mut ev| {
                ev.validate_and_normalize(&normalizer, now)
                    .ok()
                    .map(|_| ev.event_id)
            })
            .collect()
    }
}

// ---------------------------------------------------------------- generator

/// splitmix64: small, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pct(&mut self) -> u64 {
        self.below(100)
    }
}

const FIRST: [&str; 20] = [
    "Ann", "Ben", "Carla", "David", "Emma", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira",
    "Lars", "Mia", "Noah", "Olga", "Paul", "Rosa", "Sven", "Tara", "Yusuf",
];
const LAST: [&str; 20] = [
    "Lee", "Schmidt", "Rossi", "Dubois", "Novak", "Hansen", "Garcia", "Silva", "Kowalski", "Meyer",
    "Jensen", "Costa", "Weber", "Moreau", "Berg", "Fischer", "Lopez", "Wagner", "Nagy", "Keller",
];
const DOMAINS: [&str; 3] = ["example.com", "example.org", "mail.example.net"];
const AREAS: [&str; 5] = ["415", "212", "312", "617", "206"];
const CITIES: [(&str, &str, &str); 5] = [
    ("Berlin", "BE", "DE"),
    ("Paris", "IDF", "FR"),
    ("Milan", "MI", "IT"),
    ("Vienna", "9", "AT"),
    ("Madrid", "M", "ES"),
];
const PRODUCT_TYPES: [&str; 5] = ["Apparel", "Shoes", "Accessories", "Home", ""];
const SOURCES: [(&str, &str, &str, &str); 4] = [
    ("google", "cpc", "brand_search", "https://www.google.com/"),
    ("newsletter", "email", "black_friday_2026", ""),
    (
        "instagram",
        "social",
        "creator_collab",
        "https://www.instagram.com/",
    ),
    (
        "youtube",
        "video",
        "creator_collab",
        "https://www.youtube.com/",
    ),
];

/// One person of the generator's world: stores generated with different seeds
/// share many of them (same email and phone), as real people shop in several.
fn person(k: u64) -> (String, String, String, String) {
    let first = FIRST[(k % 20) as usize];
    let last = LAST[((k / 20 + k * 7) % 20) as usize];
    let email = format!(
        "{}.{}{k}@{}",
        first.to_lowercase(),
        last.to_lowercase(),
        DOMAINS[(k % 3) as usize]
    );
    let phone = format!("+1{}555{:04}", AREAS[(k % 5) as usize], (k / 5) % 10_000);
    (first.to_string(), last.to_string(), email, phone)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn money(amount: f64, currency: &str) -> Value {
    json!({"amount": format!("{amount:.2}"), "currencyCode": currency})
}

fn bag(amount: f64, currency: &str) -> Value {
    json!({"shopMoney": money(amount, currency)})
}

fn cursor_for(updated: DateTime<Utc>, num: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(
        json!({"last_id": num, "last_value": updated.timestamp_millis().to_string()}).to_string(),
    )
}

fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, u64)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(c).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let num = v.get("last_id")?.as_u64()?;
    let ms: i64 = v.get("last_value")?.as_str()?.parse().ok()?;
    Some((Utc.timestamp_millis_opt(ms).single()?, num))
}

fn line_item_cursor(index: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{{\"last_index\":{index}}}"))
}

fn decode_line_item_cursor(c: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::STANDARD.decode(c).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v.get("last_index")?.as_u64().map(|i| i as usize)
}

/// `n` customers and `n` orders, deterministic for a `seed`. Orders: most belong
/// to a customer; some are guest checkouts by an email of a customer (no customer
/// link), some carry only a phone (a few shared with a customer's), some have no
/// identity (POS walk-ins, skipped), some are test orders (skipped by default);
/// some have refunds, more line items than one page holds, or more refunds than
/// `REFUNDS_PER_ORDER`. Timestamps repeat now and then (ties on `updatedAt`).
pub fn generate(n: usize, seed: u64) -> FakeData {
    let data = FakeData::empty();
    let mut rng = Rng(seed ^ 0x5EED_5EED);
    let base = Utc
        .with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH);
    let n64 = n as u64;
    let offset = (seed % 4) * (n64 / 4);
    let currency = "EUR";

    let mut customers = Vec::with_capacity(n);
    let mut people = Vec::with_capacity(n);
    let mut t = base;
    for i in 0..n64 {
        if i % 10 != 9 {
            t += Duration::seconds(37);
        }
        let k = i + offset;
        let (first, last, email, phone) = person(k);
        let has_email = rng.pct() < 88;
        let has_phone = rng.pct() < 60 || !has_email;
        let city = CITIES[(k % 5) as usize];
        const CONSENT: [&str; 3] = ["SUBSCRIBED", "NOT_SUBSCRIBED", "UNSUBSCRIBED"];
        let consent = CONSENT[rng.below(3) as usize];
        let orders = rng.below(12);
        let node = json!({
            "id": format!("gid://shopify/Customer/{}", 7_100_000_000u64 + i),
            "firstName": first,
            "lastName": last,
            "displayName": format!("{first} {last}"),
            "createdAt": ts(t - Duration::days((i % 300) as i64)),
            "updatedAt": ts(t),
            "state": if rng.pct() < 70 { "ENABLED" } else { "DISABLED" },
            "tags": if i % 7 == 0 { json!(["vip"]) } else { json!([]) },
            "locale": "en",
            "verifiedEmail": has_email,
            "numberOfOrders": orders.to_string(),
            "amountSpent": money(orders as f64 * 41.5, currency),
            "defaultEmailAddress": if has_email { json!({"emailAddress": email, "marketingState": consent}) } else { Value::Null },
            "defaultPhoneNumber": if has_phone { json!({"phoneNumber": phone, "marketingState": "NOT_SUBSCRIBED"}) } else { Value::Null },
            "defaultAddress": {"city": city.0, "provinceCode": city.1, "countryCodeV2": city.2},
        });
        people.push((
            i,
            has_email.then(|| email.clone()),
            has_phone.then(|| phone.clone()),
            email,
            phone,
        ));
        customers.push(Node::new(node));
    }

    let mut orders = Vec::with_capacity(n);
    let mut line_item_id = 13_000_000_000u64;
    let mut refund_id = 9_000_000_000u64;
    let mut t = base + Duration::seconds(13);
    for j in 0..n64 {
        if j % 15 != 14 {
            t += Duration::seconds(41);
        }
        let created = t - Duration::hours((j % 5) as i64);
        let r = rng.pct();
        let pick = if n == 0 {
            None
        } else {
            Some(&people[rng.below(n64) as usize])
        };
        let (customer, email, phone, test) = match (r, pick) {
            (_, None) => (None, None, None, false),
            (0..=77, Some(p)) => (Some(p.0), p.1.clone(), p.2.clone(), false),
            // guest checkout by an existing customer's email
            (78..=87, Some(p)) => (None, Some(p.3.clone()), None, false),
            // phone-only guest (a household shares a customer's number)
            (88..=92, Some(p)) => (None, None, Some(p.4.clone()), false),
            // POS walk-in: nobody to attribute it to
            (93..=95, _) => (None, None, None, false),
            (96..=97, Some(p)) => (Some(p.0), p.1.clone(), None, true),
            (_, Some(p)) => (Some(p.0), p.1.clone(), p.2.clone(), false),
        };
        let count = match j {
            _ if j % 200 == 199 => 120,
            _ if j % 40 == 39 => 23,
            _ => 1 + rng.below(4) as usize,
        };
        let mut items = Vec::with_capacity(count);
        const SIZES: [&str; 3] = ["S", "M", "L"];
        let mut subtotal = 0.0;
        for li in 0..count {
            line_item_id += 1;
            let p = rng.below(30);
            let qty = 1 + rng.below(3);
            let unit = 9.0 + (p as f64) * 3.5;
            subtotal += unit * qty as f64;
            let product = if li == 0 && j % 25 == 24 {
                Value::Null // a custom line item without a product
            } else {
                json!({"id": format!("gid://shopify/Product/{}", 8_000_000_000u64 + p),
                    "productType": PRODUCT_TYPES[(p % 5) as usize]})
            };
            items.push(json!({
                "id": format!("gid://shopify/LineItem/{line_item_id}"),
                "title": format!("Product {p}"),
                "variantTitle": SIZES[(p % 3) as usize],
                "sku": format!("SKU-{p:03}-{}", qty),
                "quantity": qty,
                "product": product,
                "originalUnitPriceSet": bag(unit, currency),
                "discountedTotalSet": bag(unit * qty as f64, currency),
            }));
        }
        let discount = if j % 6 == 0 { subtotal * 0.1 } else { 0.0 };
        let shipping = 4.9;
        let total = subtotal - discount + shipping;
        let refunds_n = if j % 300 == 299 {
            12
        } else if rng.pct() < 12 {
            1
        } else {
            0
        };
        let mut refunds = Vec::new();
        let mut refunded = 0.0;
        for _ in 0..refunds_n {
            refund_id += 1;
            let amount = (total / (refunds_n as f64 + 1.0) * 100.0).round() / 100.0;
            refunded += amount;
            refunds.push(json!({
                "id": format!("gid://shopify/Refund/{refund_id}"),
                "createdAt": ts(t - Duration::minutes(30)),
                "note": if refund_id.is_multiple_of(2) { json!("damaged") } else { Value::Null },
                "totalRefundedSet": bag(amount, currency),
            }));
        }
        let journey = if r < 65 {
            let s = SOURCES[(j % 4) as usize];
            let s2 = SOURCES[((j + 1) % 4) as usize];
            let visit = |src: (&str, &str, &str, &str), at: DateTime<Utc>| {
                json!({
                    "occurredAt": ts(at),
                    "landingPage": format!("https://eu-store.example/products/p{}?utm_source={}&utm_medium={}&utm_campaign={}", j % 30, src.0, src.1, src.2),
                    "referrerUrl": if src.3.is_empty() { Value::Null } else { json!(src.3) },
                    "source": src.0,
                    "utmParameters": {"source": src.0, "medium": src.1, "campaign": src.2, "content": Value::Null, "term": Value::Null},
                })
            };
            json!({"firstVisit": visit(s, created - Duration::days(3)), "lastVisit": visit(s2, created - Duration::minutes(20))})
        } else {
            Value::Null
        };
        let presentment = if j % 10 == 3 { "USD" } else { currency };
        let status = if refunds_n == 0 {
            "PAID"
        } else if refunded + 0.005 >= total {
            "REFUNDED"
        } else {
            "PARTIALLY_REFUNDED"
        };
        let last_cursor = if count == 0 {
            Value::Null
        } else {
            json!(line_item_cursor(count - 1))
        };
        let node = json!({
            "id": format!("gid://shopify/Order/{}", 5_500_000_000u64 + j),
            "name": format!("#{}", 1001 + j),
            "email": email,
            "phone": phone,
            "createdAt": ts(created),
            "updatedAt": ts(t),
            "processedAt": ts(created),
            "cancelledAt": Value::Null,
            "test": test,
            "sourceName": if customer.is_none() && email.is_none() { "pos" } else { "web" },
            "tags": [],
            "currencyCode": currency,
            "presentmentCurrencyCode": presentment,
            "displayFinancialStatus": status,
            "displayFulfillmentStatus": if j % 3 == 0 { "UNFULFILLED" } else { "FULFILLED" },
            "discountCodes": if discount > 0.0 { json!(["WELCOME10"]) } else { json!([]) },
            "customer": customer.map(|c| json!({"id": format!("gid://shopify/Customer/{}", 7_100_000_000u64 + c)})),
            "totalPriceSet": {"shopMoney": money(total, currency), "presentmentMoney": money(if presentment == "USD" { total * 1.08 } else { total }, presentment)},
            "subtotalPriceSet": bag(subtotal, currency),
            "totalDiscountsSet": bag(discount, currency),
            "totalTaxSet": bag(total * 0.19 / 1.19, currency),
            "totalShippingPriceSet": bag(shipping, currency),
            "totalRefundedSet": bag(refunded, currency),
            "customerJourneySummary": journey,
            "lineItems": {"pageInfo": {"hasNextPage": false, "endCursor": last_cursor}, "nodes": items},
            "refunds": refunds,
        });
        orders.push(Node::new(node));
    }
    {
        let mut g = data.write();
        g.customers = customers;
        g.orders = orders;
        g.sort();
    }
    data
}

// ---------------------------------------------------------------- server

struct ServerState {
    data: FakeData,
    /// Bucket level and when it was measured.
    level: Mutex<Option<(f64, std::time::Instant)>>,
}

/// The fake API as an axum router.
pub fn router(data: FakeData) -> Router {
    let state = Arc::new(ServerState {
        data,
        level: Mutex::new(None),
    });
    Router::new().fallback(handle).with_state(state)
}

fn respond(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn gql_error(message: &str, code: &str, extra: Value) -> Value {
    let mut ext = json!({"code": code});
    if let (Some(e), Value::Object(x)) = (ext.as_object_mut(), extra) {
        e.extend(x);
    }
    json!({"message": message, "extensions": ext})
}

fn cost_json(requested: u64, actual: Option<u64>, status: (f64, f64, f64)) -> String {
    json!({"cost": {
        "requestedQueryCost": requested,
        "actualQueryCost": actual,
        "throttleStatus": {"maximumAvailable": status.0, "currentlyAvailable": status.1, "restoreRate": status.2}
    }})
    .to_string()
}

async fn handle(
    State(st): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if let Some(rest) = path.strip_prefix("/bulk-results/") {
        return download(&st, rest, uri.query().unwrap_or(""), &headers);
    }
    let version = path
        .strip_prefix("/admin/api/")
        .and_then(|p| p.strip_suffix("/graphql.json"))
        .filter(|v| !v.contains('/'));
    let Some(version) = version else {
        return respond(StatusCode::NOT_FOUND, r#"{"errors":"Not Found"}"#.into());
    };
    let token = st.data.read().token.clone();
    if headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        != Some(token.as_str())
    {
        return respond(
            StatusCode::UNAUTHORIZED,
            r#"{"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"}"#
                .into(),
        );
    }
    if method != Method::POST {
        return respond(
            StatusCode::BAD_REQUEST,
            r#"{"errors":{"query":"Required parameter missing or invalid"}}"#.into(),
        );
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) if ct.starts_with("application/json") => v,
        _ => {
            return respond(
                StatusCode::BAD_REQUEST,
                r#"{"errors":{"query":"Required parameter missing or invalid"}}"#.into(),
            )
        }
    };
    st.data.stats.queries.fetch_add(1, Ordering::Relaxed);
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let mut resp = respond(StatusCode::OK, answer(&st, &req, version, host));
    if let Ok(v) = axum::http::HeaderValue::from_str(version) {
        resp.headers_mut().insert("x-shopify-api-version", v);
    }
    resp
}

fn errors_only(errors: Vec<Value>, cost: Option<String>) -> String {
    let e = Value::Array(errors).to_string();
    match cost {
        Some(c) => format!(r#"{{"errors":{e},"data":null,"extensions":{c}}}"#),
        None => format!(r#"{{"errors":{e}}}"#),
    }
}

fn var_u32(vars: &Map<String, Value>, key: &str) -> Result<u32, Value> {
    match vars.get(key).and_then(Value::as_u64) {
        Some(n) if (1..=250).contains(&n) => Ok(n as u32),
        Some(n) => Err(gql_error(
            &format!("`{key}` is {n}: it cannot exceed 250 or be below 1."),
            "BAD_REQUEST",
            json!({}),
        )),
        None => Err(gql_error(
            &format!("Variable ${key} of type Int! was provided invalid value"),
            "BAD_REQUEST",
            json!({}),
        )),
    }
}

/// Parses `updated_at:>='2026-01-01T00:00:00Z'` (the only filter the connector uses).
fn parse_filter(q: &str) -> Option<DateTime<Utc>> {
    let rest = q.trim().strip_prefix("updated_at:>=")?;
    let rest = rest.trim_matches(|c| c == '\'' || c == '"');
    mapping::parse_time(rest)
}

fn answer(st: &ServerState, req: &Value, version: &str, host: &str) -> String {
    let op = req
        .get("operationName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let query = req.get("query").and_then(Value::as_str).unwrap_or("");
    let empty = Map::new();
    let vars = req
        .get("variables")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if !query.contains(&format!("query {op}(")) && !query.contains(&format!("mutation {op}(")) {
        return errors_only(
            vec![gql_error(
                &format!("No operation named \"{op}\""),
                "BAD_REQUEST",
                json!({}),
            )],
            None,
        );
    }
    let data = st.data.read();
    let (scope, field) = match op {
        client::OP_CUSTOMERS => ("read_customers", "customers"),
        client::OP_ORDERS => ("read_orders", "orders"),
        client::OP_ORDER_LINE_ITEMS | client::OP_ORDER_REFUNDS => ("read_orders", "order"),
        // scopes are checked when the bulk query runs
        client::OP_BULK_RUN => ("", "bulkOperationRunQuery"),
        client::OP_BULK_OPERATION => ("", "bulkOperation"),
        _ => {
            return errors_only(
                vec![gql_error(
                    &format!("fake Shopify does not serve operation `{op}`"),
                    "BAD_REQUEST",
                    json!({}),
                )],
                None,
            )
        }
    };
    // requested cost
    let requested = match op {
        client::OP_CUSTOMERS => var_u32(vars, "first").map(client::customers_query_cost),
        client::OP_ORDERS => var_u32(vars, "first")
            .and_then(|f| var_u32(vars, "lineItems").map(|l| client::orders_query_cost(f, l))),
        client::OP_ORDER_LINE_ITEMS => var_u32(vars, "first").map(client::line_items_query_cost),
        client::OP_BULK_RUN => Ok(client::BULK_RUN_COST),
        client::OP_BULK_OPERATION => Ok(client::BULK_POLL_COST),
        _ => Ok(client::refunds_query_cost()),
    };
    let requested = match requested {
        Ok(r) => r,
        Err(e) => return errors_only(vec![e], None),
    };
    if requested > MAX_QUERY_COST {
        return errors_only(
            vec![gql_error(
                &format!("Query cost is {requested}, which exceeds the single query max cost limit ({MAX_QUERY_COST})."),
                "MAX_COST_EXCEEDED",
                json!({"cost": requested, "maxCost": MAX_QUERY_COST}),
            )],
            None,
        );
    }
    // the bucket
    let status_before = {
        let mut level = st.level.lock().unwrap_or_else(|e| e.into_inner());
        match data.bucket {
            None => None,
            Some(b) => {
                let now = std::time::Instant::now();
                let cur = match *level {
                    None => b.maximum,
                    Some((l, at)) => {
                        (l + b.restore_rate * now.duration_since(at).as_secs_f64()).min(b.maximum)
                    }
                };
                if (requested as f64) > cur {
                    *level = Some((cur, now));
                    st.data.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    return errors_only(
                        vec![gql_error(
                            "Throttled",
                            "THROTTLED",
                            json!({"documentation": "https://shopify.dev/api/usage/rate-limits"}),
                        )],
                        Some(cost_json(requested, None, (b.maximum, cur, b.restore_rate))),
                    );
                }
                *level = Some((cur - requested as f64, now));
                Some(b)
            }
        }
    };
    if !scope.is_empty() && !data.scopes.iter().any(|s| s == scope) {
        // the denied field is null in `data`, next to the error
        let denied = json!({
            "data": {field: null},
            "errors": [{
                "message": format!("Access denied for {field} field. Required access: `{scope}` access scope."),
                "locations": [{"line": 1, "column": 1}],
                "path": [field],
                "extensions": {"code": "ACCESS_DENIED", "documentation": "https://shopify.dev/api/usage/access-scopes",
                    "requiredAccess": format!("`{scope}` access scope.")},
            }],
        });
        let cost = cost_json(requested, Some(1), (2000.0, 1999.0, 100.0));
        let denied = denied.to_string();
        return format!("{},\"extensions\":{cost}}}", &denied[..denied.len() - 1]);
    }
    let result = match op {
        client::OP_BULK_RUN => {
            drop(data);
            bulk_run(st, vars, version)
        }
        client::OP_BULK_OPERATION => {
            drop(data);
            bulk_poll(st, query, vars, version, host)
        }
        client::OP_CUSTOMERS => connection(&data.customers, vars, "customers", |n| {
            (n.json.to_string(), 5)
        }),
        client::OP_ORDERS => {
            let l = vars.get("lineItems").and_then(Value::as_u64).unwrap_or(0) as usize;
            let r = vars.get("refunds").and_then(Value::as_u64).unwrap_or(0) as usize;
            connection(&data.orders, vars, "orders", |n| order_json(n, l, r))
        }
        client::OP_ORDER_LINE_ITEMS => {
            st.data.stats.follow_ups.fetch_add(1, Ordering::Relaxed);
            order_line_items(&data, vars)
        }
        _ => {
            st.data.stats.follow_ups.fetch_add(1, Ordering::Relaxed);
            order_refunds(&data, vars)
        }
    };
    let (data_json, actual) = match result {
        Ok(x) => x,
        Err(e) => return errors_only(vec![e], None),
    };
    let actual = actual.min(requested);
    let status = {
        let mut level = st.level.lock().unwrap_or_else(|e| e.into_inner());
        match status_before {
            None => (2000.0, 2000.0 - actual as f64, 100.0),
            Some(b) => {
                let (l, at) = level.unwrap_or((b.maximum, std::time::Instant::now()));
                // refund the difference between requested and actual cost
                let l = (l + requested as f64 - actual as f64).min(b.maximum);
                *level = Some((l, at));
                (b.maximum, l, b.restore_rate)
            }
        }
    };
    format!(
        r#"{{"data":{data_json},"extensions":{}}}"#,
        cost_json(requested, Some(actual), status)
    )
}

/// One page of a connection: `{"<field>":{"pageInfo":…,"nodes":[…]}}` and its
/// actual cost.
fn connection(
    nodes: &[Node],
    vars: &Map<String, Value>,
    field: &str,
    render: impl Fn(&Node) -> (String, u64),
) -> Result<(String, u64), Value> {
    let first = var_u32(vars, "first")? as usize;
    let since = match vars.get("query") {
        None | Some(Value::Null) => None,
        Some(Value::String(q)) => Some(parse_filter(q).ok_or_else(|| {
            gql_error(
                &format!("fake Shopify: unsupported search query `{q}`"),
                "BAD_REQUEST",
                json!({}),
            )
        })?),
        Some(_) => {
            return Err(gql_error(
                "Variable $query of type String was provided invalid value",
                "BAD_REQUEST",
                json!({}),
            ))
        }
    };
    let mut start = match since {
        None => 0,
        Some(t) => nodes.partition_point(|n| n.updated < t),
    };
    match vars.get("after") {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) => {
            let key = decode_cursor(c).ok_or_else(|| {
                gql_error(
                    "Invalid cursor for current pagination sort.",
                    "BAD_REQUEST",
                    json!({}),
                )
            })?;
            start = start.max(nodes.partition_point(|n| n.key() <= key));
        }
        Some(_) => {
            return Err(gql_error(
                "Variable $after of type String was provided invalid value",
                "BAD_REQUEST",
                json!({}),
            ))
        }
    }
    let end = (start + first).min(nodes.len());
    let page = &nodes[start..end];
    let mut out = String::with_capacity(page.iter().map(|n| n.json.len() + 1).sum::<usize>() + 128);
    let mut actual = 3;
    out.push_str(&format!(r#"{{"{field}":{{"nodes":["#));
    for (i, n) in page.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let (json, cost) = render(n);
        out.push_str(&json);
        actual += cost;
    }
    let end_cursor = page
        .last()
        .map(|n| json!(cursor_for(n.updated, n.num)))
        .unwrap_or(Value::Null);
    out.push_str(&format!(
        r#"],"pageInfo":{{"hasNextPage":{},"endCursor":{end_cursor}}}}}}}"#,
        end < nodes.len()
    ));
    Ok((out, actual))
}

/// An order as `Orders` returns it: at most `l` line items and `r` refunds.
fn order_json(n: &Node, l: usize, r: usize) -> (String, u64) {
    let cost = |li: usize, rf: usize| 23 + li as u64 * 6 + rf as u64 * 3;
    if n.line_items <= l && n.refunds <= r {
        return (n.json.to_string(), cost(n.line_items, n.refunds));
    }
    let mut v = n.value();
    if n.line_items > l {
        if let Some(Value::Array(items)) = v.pointer_mut("/lineItems/nodes") {
            items.truncate(l);
        }
        if let Some(info) = v.pointer_mut("/lineItems/pageInfo") {
            *info = json!({"hasNextPage": true, "endCursor": if l == 0 { Value::Null } else { json!(line_item_cursor(l - 1)) }});
        }
    }
    if n.refunds > r {
        if let Some(Value::Array(refunds)) = v.get_mut("refunds") {
            refunds.truncate(r);
        }
    }
    (v.to_string(), cost(n.line_items.min(l), n.refunds.min(r)))
}

fn find_order<'a>(data: &'a Inner, vars: &Map<String, Value>) -> Option<&'a Node> {
    let id = vars.get("id").and_then(Value::as_str)?;
    data.order_index.get(id).map(|i| &data.orders[*i])
}

fn order_line_items(data: &Inner, vars: &Map<String, Value>) -> Result<(String, u64), Value> {
    let first = var_u32(vars, "first")? as usize;
    let Some(order) = find_order(data, vars) else {
        return Ok((r#"{"order":null}"#.to_string(), 1));
    };
    let start = match vars.get("after") {
        None | Some(Value::Null) => 0,
        Some(Value::String(c)) => decode_line_item_cursor(c)
            .map(|i| i + 1)
            .ok_or_else(|| gql_error("Invalid cursor.", "BAD_REQUEST", json!({})))?,
        Some(_) => return Err(gql_error("Invalid cursor.", "BAD_REQUEST", json!({}))),
    };
    let value = order.value();
    let empty = Vec::new();
    let items = value
        .pointer("/lineItems/nodes")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let end = (start + first).min(items.len());
    let page: Vec<Value> = items.get(start..end).unwrap_or(&[]).to_vec();
    let end_cursor = if end > start {
        json!(line_item_cursor(end - 1))
    } else {
        Value::Null
    };
    let actual = 4 + page.len() as u64 * 6;
    let v = json!({"order": {"lineItems": {
        "pageInfo": {"hasNextPage": end < items.len(), "endCursor": end_cursor},
        "nodes": page,
    }}});
    Ok((v.to_string(), actual))
}

fn order_refunds(data: &Inner, vars: &Map<String, Value>) -> Result<(String, u64), Value> {
    let Some(order) = find_order(data, vars) else {
        return Ok((r#"{"order":null}"#.to_string(), 1));
    };
    let refunds = order
        .value()
        .get_mut("refunds")
        .map(Value::take)
        .unwrap_or(json!([]));
    let actual = 1 + refunds.as_array().map_or(0, Vec::len) as u64 * 3;
    Ok((json!({"order": {"refunds": refunds}}).to_string(), actual))
}

// ---------------------------------------------------------------- bulk operations

const BULK_GID: &str = "gid://shopify/BulkOperation/";

fn bulk_payload(op: Value, user_errors: Value) -> Result<(String, u64), Value> {
    let v = json!({"bulkOperationRunQuery": {"bulkOperation": op, "userErrors": user_errors}});
    Ok((v.to_string(), client::BULK_RUN_COST))
}

/// `bulkOperationRunQuery`: snapshots what the bulk query selects.
fn bulk_run(
    st: &ServerState,
    vars: &Map<String, Value>,
    version: &str,
) -> Result<(String, u64), Value> {
    st.data.stats.bulk_runs.fetch_add(1, Ordering::Relaxed);
    let Some(q) = vars.get("query").and_then(Value::as_str) else {
        return Err(gql_error(
            "Variable $query of type String! was provided invalid value",
            "BAD_REQUEST",
            json!({}),
        ));
    };
    let mut g = st.data.write();
    if let Some((code, message)) = g.bulk.refuse.clone() {
        return bulk_payload(
            Value::Null,
            json!([{"field": null, "message": message, "code": code}]),
        );
    }
    if version < "2026-01" {
        if let Some(running) = g
            .ops
            .iter()
            .find(|o| matches!(o.status, "CREATED" | "RUNNING"))
        {
            return bulk_payload(
                Value::Null,
                json!([{"field": null, "code": "OPERATION_IN_PROGRESS",
                    "message": format!("A bulk query operation for this app and shop is already in progress: {BULK_GID}{}.", running.num)}]),
            );
        }
    }
    let c = q.find("customers(");
    let o = q.find("orders(");
    let (orders, at) = match (c, o) {
        (Some(c), Some(o)) => (o < c, c.min(o)),
        (Some(c), None) => (false, c),
        (None, Some(o)) => (true, o),
        (None, None) => {
            return bulk_payload(
                Value::Null,
                json!([{"field": ["query"], "code": "INVALID",
                    "message": "fake Shopify: the bulk query selects neither customers nor orders"}]),
            )
        }
    };
    let since = match q[at..].find("query: ") {
        None => None,
        Some(i) => {
            let rest = &q[at + i + "query: ".len()..];
            let filter = serde_json::Deserializer::from_str(rest)
                .into_iter::<String>()
                .next()
                .and_then(Result::ok);
            match filter.as_deref().and_then(parse_filter) {
                Some(t) => Some(t),
                None => {
                    return bulk_payload(
                        Value::Null,
                        json!([{"field": ["query"], "code": "INVALID",
                            "message": "fake Shopify: unsupported search query in the bulk query"}]),
                    )
                }
            }
        }
    };
    let (nodes, scope) = if orders {
        (&g.orders, "read_orders")
    } else {
        (&g.customers, "read_customers")
    };
    let start = since.map_or(0, |t| nodes.partition_point(|n| n.updated < t));
    let nodes = &nodes[start..];
    let denied = !g.scopes.iter().any(|s| s == scope);
    let roots = nodes.len() as u64;
    let objects = roots + nodes.iter().map(|n| n.line_items as u64).sum::<u64>();
    let mut chunks: Vec<Arc<str>> = nodes.iter().map(|n| n.jsonl.clone()).collect();
    if let Some(k) = g.bulk.malformed_line {
        let all: String = chunks.iter().map(|c| c.as_ref()).collect();
        let mut out = String::with_capacity(all.len());
        for (i, line) in all.split_inclusive('\n').enumerate() {
            if i as u64 + 1 == k {
                // the id first (as Shopify writes the selected fields), then half
                // the line: not JSON
                let id = serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .unwrap_or(Value::Null);
                let cut = line.len() / 2;
                let cut = (1..=cut.max(1))
                    .rev()
                    .find(|c| line.is_char_boundary(*c))
                    .unwrap_or(1);
                out.push_str(&format!(
                    "{{\"id\":{id},{}\n",
                    line.get(1..cut).unwrap_or("")
                ));
            } else {
                out.push_str(line);
            }
        }
        chunks = vec![Arc::from(out.as_str())];
    }
    let size = chunks.iter().map(|c| c.len() as u64).sum();
    let num = 4_100_000 + g.ops.len() as u64;
    let created_at = Utc::now();
    g.ops.push(FakeOp {
        num,
        created_at,
        polls: 0,
        status: "CREATED",
        error_code: None,
        denied,
        chunks: Arc::new(chunks),
        size,
        objects,
        roots,
        sig: format!("s{num}x{}", created_at.timestamp_subsec_nanos()),
    });
    bulk_payload(
        json!({"id": format!("{BULK_GID}{num}"), "status": "CREATED", "createdAt": ts(created_at)}),
        json!([]),
    )
}

/// `bulkOperation(id:)` / `node(id:)`: moves the operation on, one step per poll.
fn bulk_poll(
    st: &ServerState,
    query: &str,
    vars: &Map<String, Value>,
    version: &str,
    host: &str,
) -> Result<(String, u64), Value> {
    st.data.stats.bulk_polls.fetch_add(1, Ordering::Relaxed);
    if query.contains("bulkOperation(id:") && !client::has_bulk_operation_field(version) {
        return Err(gql_error(
            "Field 'bulkOperation' doesn't exist on type 'QueryRoot'",
            "undefinedField",
            json!({"typeName": "QueryRoot", "fieldName": "bulkOperation"}),
        ));
    }
    let num = vars
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| id.strip_prefix(BULK_GID))
        .and_then(|n| n.parse::<u64>().ok());
    let mut g = st.data.write();
    let options = g.bulk.clone();
    let Some(op) = num.and_then(|n| g.ops.iter_mut().find(|o| o.num == n)) else {
        return Ok((r#"{"bulkOperation":null}"#.to_string(), 1));
    };
    if matches!(op.status, "CREATED" | "RUNNING") {
        op.polls += 1;
        if op.polls <= options.polls_until_done {
            op.status = "RUNNING";
        } else if op.denied {
            op.status = "FAILED";
            op.error_code = Some("ACCESS_DENIED".into());
        } else if let Some(code) = options.fail_with.clone() {
            op.status = "FAILED";
            op.error_code = Some(code);
        } else {
            op.status = "COMPLETED";
        }
    }
    let link = format!("http://{host}/bulk-results/{}.jsonl?sig={}", op.num, op.sig);
    let done = op.status == "COMPLETED";
    let (objects, roots) = match op.status {
        "RUNNING" => (op.objects / 2, op.roots / 2),
        "CREATED" => (0, 0),
        _ => (op.objects, op.roots),
    };
    let v = json!({"bulkOperation": {
        "id": format!("{BULK_GID}{}", op.num),
        "status": op.status,
        "errorCode": op.error_code,
        "createdAt": ts(op.created_at),
        "completedAt": if done { json!(ts(Utc::now())) } else { Value::Null },
        "objectCount": objects.to_string(),
        "rootObjectCount": roots.to_string(),
        "fileSize": if done && op.size > 0 { json!(op.size.to_string()) } else { Value::Null },
        "url": if done && op.size > 0 { json!(link) } else { Value::Null },
        "partialDataUrl": if op.status == "FAILED" && op.size > 0 { json!(link) } else { Value::Null },
    }});
    Ok((v.to_string(), 1))
}

/// Where a download is in an operation's chunks.
struct BodyCursor {
    chunks: Arc<Vec<Arc<str>>>,
    i: usize,
    at: usize,
    /// Bytes left to serve (a truncated download).
    left: u64,
}

impl BodyCursor {
    /// The next block of up to 64 KiB.
    fn next_block(&mut self) -> Option<Bytes> {
        let mut out = Vec::with_capacity(64 * 1024);
        while out.len() < 64 * 1024 && self.left > 0 && self.i < self.chunks.len() {
            let chunk = self.chunks[self.i].as_bytes();
            let avail = &chunk[self.at..];
            let take = avail.len().min(self.left as usize);
            out.extend_from_slice(&avail[..take]);
            self.left -= take as u64;
            self.at += take;
            if self.at == chunk.len() {
                self.i += 1;
                self.at = 0;
            }
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

fn plain(status: StatusCode, body: &str) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r
}

/// `GET /bulk-results/<n>.jsonl?sig=…`: the result of a completed operation, as
/// a storage bucket serves it (no Shopify token; `Range: bytes=N-` honoured).
fn download(st: &ServerState, rest: &str, query: &str, headers: &HeaderMap) -> Response {
    st.data.stats.downloads.fetch_add(1, Ordering::Relaxed);
    if headers.contains_key("x-shopify-access-token") {
        return plain(
            StatusCode::BAD_REQUEST,
            "fake storage: the Shopify access token must not be sent to the result link",
        );
    }
    let num = rest
        .strip_suffix(".jsonl")
        .and_then(|n| n.parse::<u64>().ok());
    let sig = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .unwrap_or("");
    let mut g = st.data.write();
    let truncate = g.bulk.truncate_next_at.take();
    let delay = g.bulk.block_delay;
    let Some(op) = num.and_then(|n| g.ops.iter().find(|o| o.num == n)) else {
        return plain(
            StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchKey</Code></Error>",
        );
    };
    if op.sig != sig || op.status != "COMPLETED" {
        return plain(
            StatusCode::FORBIDDEN,
            "<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>",
        );
    }
    let from = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok());
    let start = from.unwrap_or(0);
    if start > op.size {
        return plain(StatusCode::RANGE_NOT_SATISFIABLE, "");
    }
    let mut cur = BodyCursor {
        chunks: op.chunks.clone(),
        i: 0,
        at: 0,
        left: truncate.unwrap_or(u64::MAX),
    };
    let mut skip = start;
    while skip > 0 && cur.i < cur.chunks.len() {
        let len = cur.chunks[cur.i].len() as u64;
        if skip >= len {
            skip -= len;
            cur.i += 1;
        } else {
            cur.at = skip as usize;
            skip = 0;
        }
    }
    let size = op.size;
    drop(g);
    let blocks = futures::stream::unfold(cur, move |mut cur| async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let block = cur.next_block()?;
        Some((Ok::<Bytes, std::io::Error>(block), cur))
    });
    let mut r = Response::new(Body::from_stream(blocks));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/jsonl"),
    );
    if from.is_some() {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!(
            "bytes {start}-{}/{size}",
            size.saturating_sub(1)
        )) {
            r.headers_mut().insert(axum::http::header::CONTENT_RANGE, v);
        }
    }
    r
}
