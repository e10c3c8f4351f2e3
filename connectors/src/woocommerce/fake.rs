//! A local stand-in for a WooCommerce shop's REST API v3 (tests, benchmarks):
//! `GET /wp-json/wc/v3/customers` and `GET /wp-json/wc/v3/orders` as the
//! WooCommerce REST API documents and implements them:
//!
//! * auth: HTTP Basic `consumer_key:consumer_secret`, or the `consumer_key` /
//!   `consumer_secret` query parameters; refusals are 401 with WordPress's error
//!   shape `{"code":..,"message":..,"data":{"status":401}}`;
//! * `per_page` (1-100, else 400 `rest_invalid_param`), `page`, `offset`,
//!   `order`; headers `X-WP-Total`, `X-WP-TotalPages`, `Link` (`next`/`prev`);
//! * orders: `orderby` `date`/`id`/`modified` (ties broken by id, as
//!   WooCommerce adds `ID` to the sort), `modified_after`/`modified_before`/
//!   `after`/`before` (exclusive, whole seconds), `dates_are_gmt` (otherwise the
//!   dates are the site's local time, UTC+2 here);
//! * customers: `orderby` `id`/`name`/`registered_date`, `role` (default
//!   `customer`); parameters it does not know (`modified_after`) are ignored, as
//!   WordPress does;
//! * a shared, mutable shop ([`FakeShop`]): orders can be modified and customers
//!   deleted while a connector walks them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::mapping::{map_customer, map_order, parse_wc_date, Ctx, OrderMapped};
use super::Config;
use crate::runtime::config::Secret;

pub const FAKE_KEY: &str = "ck_4f0e2b7c1d9a8e6f5b3c2a1d0e9f8a7b6c5d4e3f";
pub const FAKE_SECRET: &str = "cs_9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b";
/// The fake site's local time offset (dates without `_gmt`).
pub const SITE_UTC_OFFSET_HOURS: i64 = 2;

/// Shop data: customers (WordPress users) and orders, as the API returns them.
#[derive(Debug, Clone)]
pub struct FakeData {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub customers: Vec<Value>,
    pub orders: Vec<Value>,
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0xD1B5_4A32_D192_ED03 | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Maria", "João", "Anna", "Lukas", "Sofia", "Mateo", "Emma", "Noah", "Chloé", "Yuki", "Amara",
    "Oskar", "Lena", "Ravi", "Ines", "Tariq",
];
const LAST: &[&str] = &[
    "Silva", "Schmidt", "Rossi", "Novak", "García", "Dubois", "Jensen", "Kowalski", "Okafor",
    "Tanaka",
];
const CITIES: &[(&str, &str)] = &[
    ("Berlin", "DE"),
    ("Hamburg", "DE"),
    ("San Francisco", "US"),
    ("Austin", "US"),
    ("Lisbon", "PT"),
    ("Lyon", "FR"),
];
const PRODUCTS: &[(u64, &str, &str, f64)] = &[
    (93, "Woo Hoodie", "WOO-HOOD", 42.0),
    (94, "Woo Beanie", "WOO-BEAN", 18.0),
    (95, "Woo Mug", "WOO-MUG", 9.5),
    (96, "Woo Album #1", "WOO-ALB1", 15.0),
    (97, "Woo Poster", "", 12.25),
];

/// 2025-06-01T00:00:00Z: generated orders start here.
const BASE: i64 = 1_748_736_000;

/// `2017-03-22T16:28:08` (GMT or local, no zone), as WooCommerce writes dates.
pub fn wc_date(epoch: i64) -> String {
    DateTime::<Utc>::from_timestamp(epoch, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

fn set_date(v: &mut Value, key: &str, epoch: Option<i64>) {
    match epoch {
        Some(e) => {
            v[key] = json!(wc_date(e + SITE_UTC_OFFSET_HOURS * 3600));
            v[format!("{key}_gmt")] = json!(wc_date(e));
        }
        None => {
            v[key] = Value::Null;
            v[format!("{key}_gmt")] = Value::Null;
        }
    }
}

fn phone_for(k: u64, country: &str) -> String {
    match country {
        "US" => format!("(415) 555-{:04}", 100 + k % 100),
        "DE" => "030 901820".to_string(),
        _ => format!("+1 415 555 {:04}", 100 + k % 100),
    }
}

fn address(first: &str, last: &str, city: (&str, &str), email: Option<&str>, phone: &str) -> Value {
    let mut a = json!({"first_name": first, "last_name": last, "company": "",
        "address_1": "Rua Augusta 12", "address_2": "", "city": city.0, "state": "",
        "postcode": "10115", "country": city.1, "phone": phone});
    if let Some(e) = email {
        a["email"] = json!(e);
    }
    a
}

impl FakeData {
    /// A shop with nothing in it.
    pub fn empty() -> FakeData {
        FakeData {
            consumer_key: FAKE_KEY.into(),
            consumer_secret: FAKE_SECRET.into(),
            customers: Vec::new(),
            orders: Vec::new(),
        }
    }

    /// `n` orders and `n / 4` customers (plus an administrator), deterministic
    /// for `seed`: guests and registered customers, some guests using a
    /// customer's email, households sharing a phone, paid and unpaid statuses,
    /// full and partial refunds, coupons, order attribution meta, and orders
    /// modified in the same second (one run of 150 when `n >= 600`, more than a
    /// page holds).
    pub fn generate(n: usize, seed: u64) -> FakeData {
        let mut d = FakeData::empty();
        let mut rng = Rng::new(seed);
        let step = (400 * 86_400 / n.max(1) as i64).clamp(2, 3000);
        d.customers.push(json!({"id": 1, "date_created": "2025-01-01T12:00:00",
            "date_created_gmt": "2025-01-01T10:00:00", "date_modified": "2025-01-01T12:00:00",
            "date_modified_gmt": "2025-01-01T10:00:00", "email": "admin@shop.example.com",
            "first_name": "Site", "last_name": "Admin", "role": "administrator", "username": "admin",
            "billing": address("", "", ("", ""), Some(""), ""), "shipping": address("", "", ("", ""), None, ""),
            "is_paying_customer": false, "avatar_url": "https://secure.gravatar.com/avatar/0?s=96",
            "meta_data": []}));
        let n_customers = (n / 4).max(5);
        for k in 0..n_customers as u64 {
            let first = *rng.pick(FIRST);
            let last = *rng.pick(LAST);
            let city = *rng.pick(CITIES);
            // every 13th customer shares a phone with the previous one (a household)
            let phone_k = if k % 13 == 1 { k - 1 } else { k };
            let phone = phone_for(phone_k, city.1);
            let ascii = |s: &str| {
                s.to_lowercase()
                    .replace(['ã', 'á'], "a")
                    .replace('é', "e")
                    .replace('í', "i")
            };
            let email = if k % 7 == 3 {
                format!("{}.{}{k}@Example.com", first, ascii(last))
            } else {
                format!("{}.{}{k}@example.com", ascii(first), ascii(last))
            };
            let billing_email = if k % 10 == 4 {
                format!("{}{k}@work.example.org", ascii(last))
            } else {
                email.clone()
            };
            let created = BASE - 30 * 86_400 + k as i64 * step * 4;
            let modified = created + rng.below(20 * 86_400) as i64;
            let mut c = json!({"id": 2 + k * 3, "email": email, "first_name": first, "last_name": last,
                "role": "customer", "username": format!("{}{k}", ascii(first)),
                "billing": address(first, last, city, Some(&billing_email), &phone),
                "shipping": address(first, last, city, None, ""),
                "is_paying_customer": rng.below(3) > 0,
                "avatar_url": "https://secure.gravatar.com/avatar/8eb1b522f60d11fa897de1dc6351b7e8?s=96",
                "meta_data": [],
                "_links": {"self": [{"href": format!("https://shop.example.com/wp-json/wc/v3/customers/{}", 2 + k * 3)}]}});
            set_date(&mut c, "date_created", Some(created));
            set_date(&mut c, "date_modified", Some(modified));
            d.customers.push(c);
        }
        let registered: Vec<Value> = d.customers[1..].to_vec();
        let bulk = BASE + 360 * step + 17;
        let mut prev_modified = BASE;
        for k in 0..n as u64 {
            let id = 500 + k * 2;
            let created = BASE + k as i64 * step + rng.below((step / 2).max(1) as u64) as i64;
            let mut modified = created + rng.below(3 * 86_400) as i64;
            if k % 10 == 9 && prev_modified >= created {
                // two orders saved in the same second
                modified = prev_modified;
            }
            if n >= 600 && (200..350).contains(&k) {
                // a bulk status change: 150 orders in one second
                modified = bulk;
            }
            prev_modified = modified;
            let roll = rng.below(100);
            let status = match roll {
                0..=59 => "completed",
                60..=74 => "processing",
                75..=82 => "pending",
                83..=86 => "on-hold",
                87..=90 => "cancelled",
                91..=93 => "failed",
                _ => "refunded",
            };
            let (customer_id, first, last, email, city, phone) = if rng.below(10) < 7 {
                let c = rng.pick(&registered);
                (
                    c["id"].as_u64().unwrap_or(0),
                    c["first_name"].as_str().unwrap_or("").to_string(),
                    c["last_name"].as_str().unwrap_or("").to_string(),
                    c["billing"]["email"].as_str().unwrap_or("").to_string(),
                    (
                        c["billing"]["city"].as_str().unwrap_or("").to_string(),
                        c["billing"]["country"].as_str().unwrap_or("").to_string(),
                    ),
                    c["billing"]["phone"].as_str().unwrap_or("").to_string(),
                )
            } else if rng.below(10) == 0 {
                // a registered customer checking out as a guest
                let c = rng.pick(&registered);
                (
                    0,
                    c["first_name"].as_str().unwrap_or("").to_string(),
                    c["last_name"].as_str().unwrap_or("").to_string(),
                    c["email"].as_str().unwrap_or("").to_uppercase(),
                    ("Porto".to_string(), "PT".to_string()),
                    String::new(),
                )
            } else {
                let f = *rng.pick(FIRST);
                let l = *rng.pick(LAST);
                let city = *rng.pick(CITIES);
                (
                    0,
                    f.to_string(),
                    l.to_string(),
                    format!("guest{k}@mail.example.net"),
                    (city.0.to_string(), city.1.to_string()),
                    phone_for(k + 1000, city.1),
                )
            };
            let currency = if rng.below(10) < 7 { "EUR" } else { "USD" };
            let mut items = Vec::new();
            let mut subtotal = 0.0;
            for j in 0..=rng.below(3) {
                let (pid, name, sku, price) = *rng.pick(PRODUCTS);
                let qty = 1 + rng.below(3);
                let total = price * qty as f64;
                subtotal += total;
                items.push(json!({"id": id * 10 + j, "name": name, "product_id": pid, "variation_id": 0,
                    "quantity": qty, "tax_class": "", "subtotal": format!("{total:.2}"), "subtotal_tax": "0.00",
                    "total": format!("{total:.2}"), "total_tax": "0.00", "taxes": [], "meta_data": [],
                    "sku": sku, "price": price, "image": {"id": 0, "src": ""}, "parent_name": null}));
            }
            let mut coupons = Vec::new();
            let mut discount = 0.0;
            if rng.below(100) < 15 {
                discount = (subtotal * 0.1 * 100.0).round() / 100.0;
                coupons.push(json!({"id": id * 10 + 9, "code": "spring10", "discount": format!("{discount:.2}"),
                    "discount_tax": "0.00", "meta_data": []}));
            }
            let shipping = 4.9;
            let total = subtotal - discount + shipping;
            let paid = matches!(status, "completed" | "processing" | "refunded");
            let mut refunds = Vec::new();
            if status == "refunded" {
                refunds.push(
                    json!({"id": 100_000 + k, "reason": "Customer changed their mind",
                    "total": format!("-{total:.2}")}),
                );
            } else if status == "completed" && rng.below(100) < 6 {
                refunds.push(json!({"id": 100_000 + k, "reason": "",
                    "total": format!("-{:.2}", shipping)}));
            }
            let mut meta = vec![json!({"id": id * 10 + 1, "key": "is_vat_exempt", "value": "no"})];
            if rng.below(2) == 0 {
                let (st, src, med) = *rng.pick(&[
                    ("utm", "newsletter", "email"),
                    ("utm", "facebook", "cpc"),
                    ("organic", "google", "organic"),
                    ("referral", "blog.example.org", "referral"),
                    ("typein", "(direct)", "(none)"),
                ]);
                for (key, value) in [
                    ("source_type", json!(st)),
                    ("utm_source", json!(src)),
                    ("utm_medium", json!(med)),
                    (
                        "utm_campaign",
                        json!(if st == "utm" { "spring_sale" } else { "(none)" }),
                    ),
                    ("device_type", json!("Mobile")),
                    ("session_pages", json!("4")),
                    ("session_count", json!("1")),
                    ("referrer", json!("https://www.google.com/")),
                    (
                        "user_agent",
                        json!("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"),
                    ),
                ] {
                    meta.push(json!({"id": id * 10 + 2, "key": format!("_wc_order_attribution_{key}"), "value": value}));
                }
            }
            let mut o = json!({"id": id, "parent_id": 0, "status": status, "currency": currency,
                "version": "9.3.3", "prices_include_tax": false,
                "discount_total": format!("{discount:.2}"), "discount_tax": "0.00",
                "shipping_total": format!("{shipping:.2}"), "shipping_tax": "0.00", "cart_tax": "0.00",
                "total": format!("{total:.2}"), "total_tax": "0.00", "customer_id": customer_id,
                "order_key": format!("wc_order_{id:08x}"),
                "billing": address(&first, &last, (&city.0, &city.1), Some(&email), &phone),
                "shipping": address(&first, &last, (&city.0, &city.1), None, ""),
                "payment_method": "stripe", "payment_method_title": "Credit card (Stripe)",
                "transaction_id": if paid { format!("ch_{id}") } else { String::new() }});
            let rest = json!({"customer_ip_address": "203.0.113.7", "customer_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
                "created_via": "checkout", "customer_note": "", "cart_hash": "",
                "number": id.to_string(), "meta_data": meta, "line_items": items, "tax_lines": [],
                "shipping_lines": [{"id": id * 10 + 8, "method_title": "Flat rate", "method_id": "flat_rate",
                    "instance_id": "1", "total": format!("{shipping:.2}"), "total_tax": "0.00", "taxes": [], "meta_data": []}],
                "fee_lines": [], "coupon_lines": coupons, "refunds": refunds,
                "payment_url": format!("https://shop.example.com/checkout/order-pay/{id}/"),
                "is_editable": !paid, "needs_payment": !paid, "needs_processing": paid,
                "currency_symbol": if currency == "EUR" { "€" } else { "$" },
                "_links": {"self": [{"href": format!("https://shop.example.com/wp-json/wc/v3/orders/{id}")}]}});
            if let (Some(o), Value::Object(r)) = (o.as_object_mut(), rest) {
                o.extend(r);
            }
            set_date(&mut o, "date_created", Some(created));
            set_date(&mut o, "date_modified", Some(modified));
            set_date(&mut o, "date_paid", paid.then_some(created + 60));
            set_date(
                &mut o,
                "date_completed",
                (status == "completed").then_some(modified),
            );
            d.orders.push(o);
        }
        d
    }

    /// Appends `k` malformed orders (no readable total, bad currency, bad
    /// refunds, guest without email or phone) that still sort by their dates.
    pub fn add_malformed_orders(&mut self, k: usize) {
        let next = self
            .orders
            .iter()
            .filter_map(|o| o["id"].as_u64())
            .max()
            .unwrap_or(499)
            + 1;
        for i in 0..k as u64 {
            let id = next + i;
            let mut o = json!({"id": id, "status": "completed", "currency": "EUR", "total": "12.00",
                "customer_id": 0, "billing": {"email": format!("broken{id}@example.com"), "phone": "",
                "country": "DE"}, "line_items": [], "refunds": [], "meta_data": [], "number": id.to_string()});
            set_date(&mut o, "date_created", Some(BASE + i as i64));
            set_date(&mut o, "date_modified", Some(BASE + 3600 + i as i64));
            set_date(&mut o, "date_paid", Some(BASE + 60));
            match i % 4 {
                0 => o["total"] = json!("twelve"),
                1 => o["currency"] = json!("euro"),
                2 => o["refunds"] = json!([{"reason": "no id", "total": "-1.00"}]),
                _ => o["billing"] = json!({"email": "not-an-email", "phone": "", "country": "DE"}),
            }
            self.orders.push(o);
        }
    }

    /// Appends `k` malformed customers (unreadable dates).
    pub fn add_malformed_customers(&mut self, k: usize) {
        let next = self
            .customers
            .iter()
            .filter_map(|o| o["id"].as_u64())
            .max()
            .unwrap_or(1)
            + 1;
        for i in 0..k as u64 {
            self.customers.push(
                json!({"id": next + i, "email": "x@example.com", "role": "customer",
                "date_created_gmt": "last tuesday", "date_modified_gmt": null, "billing": {}}),
            );
        }
    }

    /// The `event_id`s one clean run over this data produces (customers of the
    /// `customer` role, every order).
    pub fn expected_event_ids(&self, site: &str) -> BTreeSet<String> {
        let ctx = Ctx {
            site,
            received_at: Utc::now(),
        };
        let mut out = BTreeSet::new();
        for c in &self.customers {
            if c["role"] == "customer" {
                if let Ok(e) = map_customer(c, &ctx) {
                    out.insert(e.event_id);
                }
            }
        }
        for o in &self.orders {
            if let OrderMapped::Events(evs) = map_order(o, &ctx) {
                out.extend(evs.into_iter().map(|e| e.event_id));
            }
        }
        out
    }
}

/// The config of a `woocommerce` instance pointing at a fake on `base_url`.
pub fn test_config(base_url: &str) -> Config {
    Config {
        site_url: base_url.to_string(),
        consumer_key: Some(Secret::new(FAKE_KEY)),
        consumer_secret: Some(Secret::new(FAKE_SECRET)),
        per_page: 100,
        customer_role: "customer".into(),
        customer_rescan_hours: 24,
        settle_secs: 0,
        query_string_auth: false,
        concurrent_pages: super::default_concurrent_pages(),
    }
}

/// One object with what the lists sort and filter by, and its JSON text.
#[derive(Debug, Clone)]
struct Obj {
    id: u64,
    created: i64,
    modified: i64,
    role: String,
    status: String,
    name: String,
    value: Value,
    json: String,
}

impl Obj {
    fn new(value: Value) -> Obj {
        let date = |k: &str| {
            value
                .get(k)
                .and_then(Value::as_str)
                .and_then(parse_wc_date)
                .map_or(0, |t| t.timestamp())
        };
        let text = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("");
        Obj {
            id: value.get("id").and_then(Value::as_u64).unwrap_or(0),
            created: date("date_created_gmt"),
            modified: date("date_modified_gmt"),
            role: text("role").to_string(),
            status: text("status").to_string(),
            name: format!("{} {}", text("first_name"), text("last_name")),
            json: value.to_string(),
            value,
        }
    }
}

struct Shop {
    key: String,
    secret: String,
    /// Plays a shop older than WooCommerce 5.8: `modified_after` is ignored.
    legacy: bool,
    /// Ascending id.
    customers: Vec<Obj>,
    /// Ascending `(modified, id)`.
    orders: Vec<Obj>,
    /// Index: role -> positions in `customers` (ascending id).
    by_role: HashMap<String, Vec<usize>>,
    /// Index: `live[i]` = orders in `orders[..i]` that are not in the trash.
    live: Vec<usize>,
}

impl Shop {
    /// Sorts the lists and rebuilds the indexes (after every change).
    fn reindex(&mut self) {
        self.customers.sort_by_key(|o| o.id);
        self.orders.sort_by_key(|o| (o.modified, o.id));
        self.by_role.clear();
        for (i, c) in self.customers.iter().enumerate() {
            self.by_role.entry(c.role.clone()).or_default().push(i);
        }
        self.live.clear();
        self.live.push(0);
        let mut n = 0;
        for o in &self.orders {
            if o.status != "trash" {
                n += 1;
            }
            self.live.push(n);
        }
    }
}

/// The objects a list request selects, ascending in the requested `orderby`.
enum Selection<'a> {
    /// Filtered and sorted for this request (the rarely used orderings and filters).
    Refs(Vec<&'a Obj>),
    /// All of `objs`.
    All(&'a [Obj]),
    /// Positions in `objs` (customers of a role, by id).
    Indexed(&'a [Obj], &'a [usize]),
    /// `objs[start..end]` without the trashed ones (orders by modified, status `any`).
    Live {
        objs: &'a [Obj],
        live: &'a [usize],
        start: usize,
        end: usize,
    },
}

impl<'a> Selection<'a> {
    fn len(&self) -> usize {
        match self {
            Selection::Refs(v) => v.len(),
            Selection::All(objs) => objs.len(),
            Selection::Indexed(_, ix) => ix.len(),
            Selection::Live {
                live, start, end, ..
            } => live[*end] - live[*start],
        }
    }

    /// The `rank`-th selected object (`rank < len()`).
    fn get(&self, rank: usize) -> Option<&'a Obj> {
        match self {
            Selection::Refs(v) => v.get(rank).copied(),
            Selection::All(objs) => objs.get(rank),
            Selection::Indexed(objs, ix) => ix.get(rank).and_then(|i| objs.get(*i)),
            Selection::Live {
                objs,
                live,
                start,
                end,
            } => {
                // the first position i whose live count (through i) exceeds rank
                let base = live[*start];
                let i = *start + live[*start + 1..=*end].partition_point(|n| n - base <= rank);
                objs.get(i).filter(|_| i < *end)
            }
        }
    }
}

/// A running fake shop's data, shared with its router: change it while a
/// connector walks it.
#[derive(Clone)]
pub struct FakeShop(Arc<RwLock<Shop>>);

impl FakeShop {
    pub fn new(data: FakeData) -> FakeShop {
        let mut shop = Shop {
            key: data.consumer_key,
            secret: data.consumer_secret,
            legacy: false,
            customers: data.customers.into_iter().map(Obj::new).collect(),
            orders: data.orders.into_iter().map(Obj::new).collect(),
            by_role: HashMap::new(),
            live: Vec::new(),
        };
        shop.reindex();
        FakeShop(Arc::new(RwLock::new(shop)))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Shop> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Shop> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The API of this shop.
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Saves order `id` at `at` (its `date_modified` moves), optionally with a
    /// new status. Returns false when there is no such order.
    pub fn touch_order(&self, id: u64, at: DateTime<Utc>, status: Option<&str>) -> bool {
        let mut shop = self.write();
        let Some(o) = shop.orders.iter_mut().find(|o| o.id == id) else {
            return false;
        };
        let mut v = o.value.clone();
        set_date(&mut v, "date_modified", Some(at.timestamp()));
        if let Some(s) = status {
            v["status"] = json!(s);
            if matches!(s, "processing" | "completed") && v["date_paid_gmt"].is_null() {
                set_date(&mut v, "date_paid", Some(at.timestamp()));
            }
        }
        *o = Obj::new(v);
        shop.reindex();
        true
    }

    /// Plays a shop that ignores `modified_after` (older than WooCommerce 5.8).
    pub fn set_legacy(&self, legacy: bool) {
        self.write().legacy = legacy;
    }

    /// Adds (or replaces) an order.
    pub fn upsert_order(&self, order: Value) {
        let mut shop = self.write();
        let o = Obj::new(order);
        shop.orders.retain(|x| x.id != o.id);
        shop.orders.push(o);
        shop.reindex();
    }

    /// Deletes a customer. Returns false when there is no such customer.
    pub fn delete_customer(&self, id: u64) -> bool {
        let mut shop = self.write();
        let before = shop.customers.len();
        shop.customers.retain(|c| c.id != id);
        shop.reindex();
        before != shop.customers.len()
    }

    /// Adds a customer (the next id, as WordPress would).
    pub fn add_customer(&self, mut customer: Value) -> u64 {
        let mut shop = self.write();
        let id = shop.customers.iter().map(|c| c.id).max().unwrap_or(1) + 1;
        customer["id"] = json!(id);
        shop.customers.push(Obj::new(customer));
        shop.reindex();
        id
    }

    /// Current orders, ascending `(date_modified_gmt, id)`.
    pub fn orders(&self) -> Vec<Value> {
        self.read().orders.iter().map(|o| o.value.clone()).collect()
    }

    /// Current customers, ascending id.
    pub fn customers(&self) -> Vec<Value> {
        self.read()
            .customers
            .iter()
            .map(|o| o.value.clone())
            .collect()
    }
}

/// The fake shop's API over `data`.
pub fn router(data: FakeData) -> Router {
    FakeShop::new(data).router()
}

fn wp_error(status: u16, code: &str, message: &str) -> Response {
    respond(
        status,
        json!({"code": code, "message": message, "data": {"status": status}}).to_string(),
        Vec::new(),
    )
}

fn respond(status: u16, body: String, headers: Vec<(&'static str, String)>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    for (k, v) in headers {
        if let Ok(v) = header::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    r
}

fn invalid_param(name: &str, why: &str) -> Response {
    respond(
        400,
        json!({"code": "rest_invalid_param", "message": format!("Invalid parameter(s): {name}"),
            "data": {"status": 400, "params": {name: why}}})
        .to_string(),
        Vec::new(),
    )
}

/// Checks the consumer key and secret: Basic auth, else query parameters.
fn authorize(shop: &Shop, headers: &HeaderMap, params: &[(String, String)]) -> Option<Response> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        });
    let query = || {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Some((get("consumer_key")?, get("consumer_secret")?))
    };
    let Some((key, secret)) = basic.or_else(query) else {
        return Some(wp_error(
            401,
            "woocommerce_rest_cannot_view",
            "Sorry, you cannot list resources.",
        ));
    };
    if key != shop.key {
        return Some(wp_error(
            401,
            "woocommerce_rest_authentication_error",
            "Consumer key is invalid.",
        ));
    }
    if secret != shop.secret {
        return Some(wp_error(
            401,
            "woocommerce_rest_authentication_error",
            "Consumer secret is invalid.",
        ));
    }
    None
}

async fn handle(
    State(shop): State<FakeShop>,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let params: Vec<(String, String)> =
        reqwest::Url::parse(&format!("http://fake/?{}", q.unwrap_or_default()))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
    let path = uri.path().trim_end_matches('/');
    let collection = match path {
        "/wp-json/wc/v3/customers" => "customers",
        "/wp-json/wc/v3/orders" => "orders",
        _ => {
            return wp_error(
                404,
                "rest_no_route",
                "No route was found matching the URL and request method.",
            )
        }
    };
    let shop = shop.read();
    if let Some(refused) = authorize(&shop, &headers, &params) {
        return refused;
    }
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let num = |k: &str, default: u64| -> Result<u64, Box<Response>> {
        match param(k) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| Box::new(invalid_param(k, &format!("{k} is not of type integer.")))),
        }
    };
    let per_page = match num("per_page", 10) {
        Ok(p) if (1..=100).contains(&p) => p as usize,
        Ok(_) => {
            return invalid_param(
                "per_page",
                "per_page must be between 1 (inclusive) and 100 (inclusive)",
            )
        }
        Err(r) => return *r,
    };
    let page = match num("page", 1) {
        Ok(p) if p >= 1 => p as usize,
        Ok(_) => return invalid_param("page", "page must be greater than or equal to 1"),
        Err(r) => return *r,
    };
    let offset = match num("offset", 0) {
        Ok(o) => o as usize,
        Err(r) => return *r,
    };
    let desc = match param("order") {
        None | Some("") => collection == "orders",
        Some("asc") => false,
        Some("desc") => true,
        Some(_) => return invalid_param("order", "order is not one of asc and desc."),
    };
    let gmt = matches!(param("dates_are_gmt"), Some("true" | "1"));
    let shift = if gmt { 0 } else { SITE_UTC_OFFSET_HOURS * 3600 };
    let date = |k: &str| -> Result<Option<i64>, Box<Response>> {
        match param(k) {
            None | Some("") => Ok(None),
            Some(v) => parse_wc_date(v)
                .map(|t| Some(t.timestamp() - shift))
                .ok_or_else(|| Box::new(invalid_param(k, "Invalid date."))),
        }
    };
    let selected: Selection = match collection {
        "customers" => {
            let role = param("role").unwrap_or("customer");
            match param("orderby").unwrap_or("name") {
                "id" | "include" if role == "all" => Selection::All(&shop.customers),
                "id" | "include" => Selection::Indexed(
                    &shop.customers,
                    shop.by_role.get(role).map_or(&[][..], Vec::as_slice),
                ),
                "name" => {
                    let mut v = role_filtered(&shop, role);
                    v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
                    Selection::Refs(v)
                }
                "registered_date" => {
                    let mut v = role_filtered(&shop, role);
                    v.sort_by_key(|c| (c.created, c.id));
                    Selection::Refs(v)
                }
                _ => {
                    return invalid_param(
                        "orderby",
                        "orderby is not one of id, include, name, and registered_date.",
                    )
                }
            }
        }
        _ => {
            let bounds = (
                date("modified_after"),
                date("modified_before"),
                date("after"),
                date("before"),
            );
            let (ma, mb, ca, cb) = match bounds {
                (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
                (Err(r), ..) | (_, Err(r), ..) | (_, _, Err(r), _) | (.., Err(r)) => return *r,
            };
            let status = param("status").unwrap_or("any");
            let orderby = param("orderby").unwrap_or("date");
            if !matches!(
                orderby,
                "modified" | "date" | "id" | "include" | "title" | "slug"
            ) {
                return invalid_param(
                    "orderby",
                    "orderby is not one of date, id, include, title, slug, and modified.",
                );
            }
            // sorted by (modified, id): the modified bounds are binary searches
            let ma = if shop.legacy { None } else { ma };
            let start = ma.map_or(0, |a| shop.orders.partition_point(|o| o.modified <= a));
            let end = mb
                .map_or(shop.orders.len(), |b| {
                    shop.orders.partition_point(|o| o.modified < b)
                })
                .max(start);
            if orderby == "modified" && status == "any" && ca.is_none() && cb.is_none() {
                Selection::Live {
                    objs: &shop.orders,
                    live: &shop.live,
                    start,
                    end,
                }
            } else {
                let mut v: Vec<&Obj> = shop.orders[start..end]
                    .iter()
                    .filter(|o| ca.is_none_or(|a| o.created > a))
                    .filter(|o| cb.is_none_or(|b| o.created < b))
                    .filter(|o| match status {
                        "any" => o.status != "trash",
                        wanted => wanted.split(',').any(|w| w == o.status),
                    })
                    .collect();
                match orderby {
                    "date" => v.sort_by_key(|o| (o.created, o.id)),
                    "id" | "include" | "title" | "slug" => v.sort_by_key(|o| o.id),
                    _ => {}
                }
                Selection::Refs(v)
            }
        }
    };
    let total = selected.len();
    let first = if offset > 0 {
        offset
    } else {
        (page - 1) * per_page
    };
    let window: Vec<&Obj> = (first.min(total)..(first + per_page).min(total))
        .filter_map(|r| selected.get(if desc { total - 1 - r } else { r }))
        .collect();
    let mut body =
        String::with_capacity(2 + window.iter().map(|o| o.json.len() + 1).sum::<usize>());
    body.push('[');
    for (i, o) in window.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&o.json);
    }
    body.push(']');
    let pages = total.div_ceil(per_page);
    let base = format!("https://shop.example.com/wp-json/wc/v3/{collection}");
    let link_query: String = params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "page" | "consumer_key" | "consumer_secret"))
        .map(|(k, v)| format!("{k}={v}&"))
        .collect();
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!(
            "<{base}?{link_query}page={}>; rel=\"prev\"",
            (page - 1).min(pages.max(1))
        ));
    }
    if pages > page {
        links.push(format!(
            "<{base}?{link_query}page={}>; rel=\"next\"",
            page + 1
        ));
    }
    let mut hs = vec![
        ("x-wp-total", total.to_string()),
        ("x-wp-totalpages", pages.to_string()),
    ];
    if !links.is_empty() {
        hs.push(("link", links.join(", ")));
    }
    respond(200, body, hs)
}

/// Customers of `role` (`all`: every user), ascending id.
fn role_filtered<'a>(shop: &'a Shop, role: &str) -> Vec<&'a Obj> {
    shop.customers
        .iter()
        .filter(|c| role == "all" || c.role == role)
        .collect()
}

/// A time `secs` seconds before now (for orders the walk must hold back).
pub fn seconds_ago(secs: i64) -> DateTime<Utc> {
    Utc::now() - Duration::seconds(secs)
}
