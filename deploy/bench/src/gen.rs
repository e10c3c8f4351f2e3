//! Deterministic, realistic web traffic: people who browse anonymously, later
//! identify (user id + email, sometimes a phone), sometimes on a second device,
//! view products and sometimes order. The same model renders canonical events
//! (what the collector writes to Kafka, phase a/b) and Segment messages (what an
//! SDK posts to the collector, phase c).

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use socialcrm_schemas::{
    CanonicalEvent, Channel, IdType, Identifier, Normalizer, Revenue, SCHEMA_VERSION,
};

/// Average events per person (1M events → ~77k people).
pub const EVENTS_PER_PERSON: usize = 13;
const DAY_MS: i64 = 86_400_000;
const SPAN_DAYS: i64 = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Page,
    Track,
    Order,
    Identify,
}

/// One event of the timeline, rendered on demand.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub ts_ms: i64,
    pub person: u32,
    /// 0 = first browser, 1 = second device.
    pub device: u8,
    pub kind: Kind,
    /// The SDK on this device knows the user id (identified earlier on it).
    pub known_user: bool,
}

#[derive(Debug, Clone)]
pub struct Person {
    pub anon: [String; 2],
    pub user_id: String,
    pub first: &'static str,
    pub last: &'static str,
    /// Normalised (lower case).
    pub email: String,
    /// E.164, when the person gave one.
    pub phone: Option<String>,
    /// As typed in a form (`+1 415-555-0123`).
    pub phone_typed: Option<String>,
    pub plan: &'static str,
    pub ua: [usize; 2],
    pub ip: [String; 2],
    pub locale: &'static str,
    pub created_ms: i64,
    /// The second-device identify carries the user id (login) rather than only the email (form).
    pub d2_user: bool,
}

pub struct Dataset {
    pub persons: Vec<Person>,
    /// Sorted by time; index = event number.
    pub slots: Vec<Slot>,
    pub seed: u64,
    pub stats: DatasetStats,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DatasetStats {
    pub events: usize,
    pub persons: usize,
    pub identified_persons: usize,
    pub two_device_persons: usize,
    pub persons_with_phone: usize,
    pub pages: usize,
    pub tracks: usize,
    pub orders: usize,
    pub identifies: usize,
}

const FIRST: &[&str] = &[
    "Ann", "Ben", "Carl", "Dana", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Mateo", "Nora", "Olga", "Pavel", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera",
    "Wei", "Ximena", "Yusuf", "Zoe", "Amelie", "Bruno", "Chloe", "Diego", "Elif", "Finn", "Greta",
    "Hugo", "Ida", "Jamal", "Kira", "Luca", "Maya", "Nils",
];
const LAST: &[&str] = &[
    "Lee", "Smith", "Garcia", "Müller", "Rossi", "Dubois", "Novak", "Silva", "Kowalski", "Yilmaz",
    "Tanaka", "Olsen", "Ivanova", "Schmidt", "Jensen", "Moreau", "Kim", "Nguyen", "Patel", "Cohen",
    "Santos", "Berg", "Fischer", "Costa", "Horvat", "Popescu", "Virtanen", "Andersen", "Meyer",
    "Romano",
];
const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "icloud.com",
    "proton.me",
    "gmx.de",
    "web.de",
    "hotmail.co.uk",
    "example.com",
    "example.org",
    "mail.example.net",
    "fastmail.com",
];
const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.63",
];
const LOCALES: &[&str] = &[
    "en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "it-IT", "nl-NL", "pl-PL",
];
const REFERRERS: &[&str] = &[
    "",
    "",
    "",
    "",
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.instagram.com/",
    "https://www.facebook.com/",
    "https://www.tiktok.com/",
    "https://duckduckgo.com/",
    "https://www.bing.com/",
    "https://news.example.org/newsletter",
];
const CAMPAIGNS: &[(&str, &str, &str)] = &[
    ("spring_sale", "newsletter", "email"),
    ("creator_collab", "youtube", "video"),
    ("retargeting_q4", "facebook", "cpc"),
    ("brand_search", "google", "cpc"),
    ("insta_stories", "instagram", "social"),
];
const CATEGORIES: &[&str] = &[
    "apparel",
    "shoes",
    "accessories",
    "home",
    "outdoor",
    "kids",
    "beauty",
    "gifts",
];
const ADJ: &[&str] = &[
    "Classic", "Organic", "Vintage", "Urban", "Alpine", "Soft", "Travel", "Everyday",
];
const NOUN: &[&str] = &[
    "Hoodie", "Sneaker", "Backpack", "Mug", "Jacket", "Scarf", "Lamp", "Bottle", "Cap", "Tote",
];
const BLOG: &[&str] = &[
    "10-gift-ideas",
    "how-we-source-cotton",
    "care-guide",
    "summer-lookbook",
    "behind-the-seams",
    "size-guide",
];
const TRACKS: &[&str] = &[
    "Product Viewed",
    "Product Viewed",
    "Product Viewed",
    "Product Added",
    "Products Searched",
    "Product List Viewed",
    "Checkout Started",
    "Cart Viewed",
];
const PLANS: &[&str] = &["free", "free", "plus", "pro"];
const US_AREAS: &[&str] = &[
    "212", "415", "312", "617", "305", "206", "512", "646", "718", "213", "303", "404",
];
const PRODUCTS: usize = 1000;

fn pick<'a, T: ?Sized>(r: &mut SmallRng, xs: &'a [&'a T]) -> &'a T {
    xs[r.random_range(0..xs.len())]
}

fn uuid(r: &mut SmallRng) -> String {
    let a: u128 = r.random();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Standard normal (Box–Muller).
fn normal(r: &mut SmallRng) -> f64 {
    let u1: f64 = r.random::<f64>().max(1e-12);
    let u2: f64 = r.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn exp(r: &mut SmallRng, mean: f64) -> f64 {
    -mean * r.random::<f64>().max(1e-12).ln()
}

/// Midnight UTC of today: events lie within the 90 days before it, so runs on
/// the same day produce byte-identical data.
pub fn default_anchor_ms() -> i64 {
    let now = Utc::now().timestamp_millis();
    now - now.rem_euclid(DAY_MS)
}

fn make_person(i: usize, seed: u64, anchor_ms: i64, normalizer: &Normalizer) -> Person {
    let mut r = SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1));
    let first = pick(&mut r, FIRST);
    let last = pick(&mut r, LAST);
    let local = format!("{}.{}{}", first, last, i)
        .to_lowercase()
        .replace('ü', "ue");
    let email = format!("{local}@{}", pick(&mut r, DOMAINS));
    let (phone, phone_typed) = if r.random_bool(0.3) {
        let typed = match r.random_range(0..10) {
            0..=5 => {
                let area = pick(&mut r, US_AREAS);
                let ex = r.random_range(201..=989);
                let line = r.random_range(0..10_000);
                format!("+1 {area}-{ex:03}-{line:04}")
            }
            6..=7 => format!("+44 20 7946 {:04}", r.random_range(0..1000)),
            _ => format!("+49 30 {:08}", r.random_range(20_000_000..99_999_999)),
        };
        match normalizer.normalize_value(IdType::Phone, &typed) {
            Ok(e164) => (Some(e164), Some(typed)),
            Err(_) => (None, None),
        }
    } else {
        (None, None)
    };
    let ip = |r: &mut SmallRng| {
        // documentation ranges (RFC 5737)
        let nets = ["192.0.2", "198.51.100", "203.0.113"];
        format!("{}.{}", nets[r.random_range(0..3)], r.random_range(1..255))
    };
    Person {
        anon: [uuid(&mut r), uuid(&mut r)],
        user_id: format!("u{:08}", 10_000_000 + i * 7),
        first,
        last,
        email,
        phone,
        phone_typed,
        plan: pick(&mut r, PLANS),
        ua: [r.random_range(0..UAS.len()), r.random_range(0..UAS.len())],
        ip: [ip(&mut r), ip(&mut r)],
        locale: pick(&mut r, LOCALES),
        created_ms: anchor_ms - r.random_range(0..400) * DAY_MS - r.random_range(0..DAY_MS),
        d2_user: r.random_bool(0.7),
    }
}

/// Builds the timeline of `n` events (no JSON yet: events are rendered when sent).
pub fn build(n: usize, seed: u64, anchor_ms: i64) -> Dataset {
    let normalizer = Normalizer::default();
    let n_persons = (n / EVENTS_PER_PERSON).max(1);
    let persons: Vec<Person> = (0..n_persons)
        .map(|i| make_person(i, seed, anchor_ms, &normalizer))
        .collect();

    // events per person: log-normal weights (a few heavy users, many light ones),
    // scaled to exactly n, at least one each
    let mut r = SmallRng::seed_from_u64(seed.wrapping_add(1));
    let weights: Vec<f64> = (0..n_persons)
        .map(|_| (0.9 * normal(&mut r)).exp())
        .collect();
    let wsum: f64 = weights.iter().sum();
    let mut counts: Vec<usize> = weights
        .iter()
        .map(|w| ((w / wsum) * n as f64).round().max(1.0) as usize)
        .collect();
    let mut total: usize = counts.iter().sum();
    while total != n {
        let i = r.random_range(0..n_persons);
        if total < n {
            counts[i] += 1;
            total += 1;
        } else if counts[i] > 1 {
            counts[i] -= 1;
            total -= 1;
        }
    }

    let mut stats = DatasetStats {
        events: n,
        persons: n_persons,
        ..Default::default()
    };
    let mut slots: Vec<Slot> = Vec::with_capacity(n);
    let start_ms = anchor_ms - SPAN_DAYS * DAY_MS;
    for (p, &k) in counts.iter().enumerate() {
        let mut r =
            SmallRng::seed_from_u64(seed ^ (p as u64).wrapping_mul(0xd1b5_4a32_d192_ed03) ^ 0x5555);
        // identify: 70% of people with two or more events
        let identifies = k >= 2 && r.random_bool(0.7);
        let id0 = if identifies {
            ((k as f64) * r.random_range(0.0..0.6)) as usize
        } else {
            usize::MAX
        };
        // second device: 25% of identified people with enough events
        let (switch, id1) = if identifies && k >= id0 + 3 && r.random_bool(0.25) {
            let s = r.random_range(id0 + 1..k);
            (s, (s + r.random_range(0..3)).min(k - 1))
        } else {
            (usize::MAX, usize::MAX)
        };
        stats.identified_persons += usize::from(identifies);
        stats.two_device_persons += usize::from(switch != usize::MAX);
        stats.persons_with_phone += usize::from(identifies && persons[p].phone.is_some());

        // timestamps: sessions of clicks (~1 min apart) separated by days
        let mut offs: Vec<f64> = Vec::with_capacity(k);
        let mut t = 0.0f64;
        for j in 0..k {
            if j > 0 {
                t += if r.random_bool(0.75) {
                    exp(&mut r, 60_000.0) + 2_000.0
                } else {
                    exp(&mut r, 4.0 * DAY_MS as f64)
                };
            }
            offs.push(t);
        }
        let first_ms = start_ms + r.random_range(0..(SPAN_DAYS - 1) * DAY_MS);
        let room = (anchor_ms - 60_000 - first_ms) as f64;
        let scale = if t > room { room / t } else { 1.0 };

        for (j, off) in offs.iter().enumerate() {
            let device: u8 = if j >= switch {
                if j <= id1 {
                    1
                } else {
                    u8::from(r.random_bool(0.5))
                }
            } else {
                0
            };
            let kind = if j == id0 || j == id1 {
                Kind::Identify
            } else {
                let x: f64 = r.random();
                let identified = j > id0;
                if x < 0.58 {
                    Kind::Page
                } else if x < (if identified { 0.94 } else { 0.985 }) {
                    Kind::Track
                } else {
                    Kind::Order
                }
            };
            let known_user = if device == 0 {
                j >= id0
            } else {
                j >= id1 && persons[p].d2_user
            };
            match kind {
                Kind::Page => stats.pages += 1,
                Kind::Track => stats.tracks += 1,
                Kind::Order => stats.orders += 1,
                Kind::Identify => stats.identifies += 1,
            }
            slots.push(Slot {
                ts_ms: first_ms + (off * scale) as i64,
                person: p as u32,
                device,
                kind,
                known_user,
            });
        }
    }
    // stable: one person's events keep their order on equal timestamps
    slots.sort_by_key(|s| s.ts_ms);
    Dataset {
        persons,
        slots,
        seed,
        stats,
    }
}

fn ms_to_dt(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}

/// What a page or track looks like, shared by both renderings.
struct Body {
    seg_type: &'static str,
    event_type: &'static str,
    name: Option<String>,
    properties: Map<String, Value>,
    context: Map<String, Value>,
    traits: Map<String, Value>,
    revenue: Option<Revenue>,
}

fn product(i: usize) -> (String, String, &'static str, f64) {
    let id = format!("p-{}", 1000 + i);
    let name = format!(
        "{} {}",
        ADJ[i % ADJ.len()],
        NOUN[(i / ADJ.len()) % NOUN.len()]
    );
    let cat = CATEGORIES[(i * 7) % CATEGORIES.len()];
    let price = 9.0 + ((i * 37) % 190) as f64 + 0.99;
    (id, name, cat, price)
}

impl Dataset {
    fn body(&self, n: usize, for_segment: bool) -> Body {
        let s = self.slots[n];
        let p = &self.persons[s.person as usize];
        let d = s.device as usize;
        let mut r = SmallRng::seed_from_u64(
            self.seed ^ (n as u64).wrapping_mul(0xa076_1d64_78bd_642f) ^ 0x77,
        );

        // page the event happened on
        let (path, title, search): (String, String, String) = match r.random_range(0..10) {
            0 => ("/".into(), "Shop Example".into(), String::new()),
            1 | 2 => {
                let c = pick(&mut r, CATEGORIES);
                (
                    format!("/catalog/{c}"),
                    format!("{c} | Shop Example"),
                    String::new(),
                )
            }
            3..=6 => {
                let (id, name, _, _) = product(r.random_range(0..PRODUCTS));
                (
                    format!("/products/{id}"),
                    format!("{name} | Shop Example"),
                    String::new(),
                )
            }
            7 => {
                let b = pick(&mut r, BLOG);
                (format!("/blog/{b}"), b.replace('-', " "), String::new())
            }
            8 => ("/cart".into(), "Your cart".into(), String::new()),
            _ => {
                let q = pick(&mut r, NOUN).to_lowercase();
                ("/search".into(), "Search".into(), format!("?q={q}"))
            }
        };
        let referrer = pick(&mut r, REFERRERS);
        let campaign = r
            .random_bool(0.12)
            .then(|| CAMPAIGNS[r.random_range(0..CAMPAIGNS.len())]);
        let search = match campaign {
            Some((name, src, med)) => {
                format!("?utm_source={src}&utm_medium={med}&utm_campaign={name}")
            }
            None => search,
        };
        let url = format!("https://shop.example.com{path}{search}");
        let mut context = Map::new();
        context.insert(
            "library".into(),
            json!({"name": "analytics.js", "version": "5.2.1"}),
        );
        context.insert("userAgent".into(), Value::String(UAS[p.ua[d]].to_string()));
        context.insert("ip".into(), Value::String(p.ip[d].clone()));
        context.insert("locale".into(), Value::String(p.locale.to_string()));
        // analytics.js sends empty strings; leave them out to keep events compact
        let mut page = Map::new();
        page.insert("path".into(), Value::String(path.clone()));
        if !referrer.is_empty() {
            page.insert("referrer".into(), Value::String(referrer.to_string()));
        }
        if !search.is_empty() {
            page.insert("search".into(), Value::String(search.clone()));
        }
        page.insert("url".into(), Value::String(url.clone()));
        context.insert("page".into(), Value::Object(page));
        if let Some((name, src, med)) = campaign {
            context.insert(
                "campaign".into(),
                json!({"name": name, "source": src, "medium": med}),
            );
        }

        let mut properties = Map::new();
        let mut traits = Map::new();
        let mut revenue = None;
        let (seg_type, event_type, name) = match s.kind {
            Kind::Page => {
                properties.insert("path".into(), Value::String(path.clone()));
                if !referrer.is_empty() {
                    properties.insert("referrer".into(), Value::String(referrer.to_string()));
                }
                properties.insert("title".into(), Value::String(title.clone()));
                properties.insert("url".into(), Value::String(url.clone()));
                let name = path
                    .split('/')
                    .nth(1)
                    .filter(|x| !x.is_empty())
                    .unwrap_or("home");
                (
                    "page",
                    "page",
                    Some(format!("{}{}", name[..1].to_uppercase(), &name[1..])),
                )
            }
            Kind::Track => {
                let ev = pick(&mut r, TRACKS);
                let (id, pname, cat, price) = product(r.random_range(0..PRODUCTS));
                match ev {
                    "Products Searched" => {
                        properties.insert(
                            "query".into(),
                            Value::String(pick(&mut r, NOUN).to_lowercase()),
                        );
                    }
                    "Product List Viewed" => {
                        properties.insert("list_id".into(), Value::String(format!("list-{cat}")));
                        properties.insert("category".into(), Value::String(cat.to_string()));
                    }
                    "Checkout Started" | "Cart Viewed" => {
                        properties.insert(
                            "cart_id".into(),
                            Value::String(format!("cart-{}-{}", s.person, s.device)),
                        );
                        properties.insert("value".into(), json!(price));
                        properties.insert("currency".into(), Value::String("USD".into()));
                    }
                    _ => {
                        properties.insert("product_id".into(), Value::String(id.clone()));
                        properties.insert("name".into(), Value::String(pname));
                        properties.insert("category".into(), Value::String(cat.to_string()));
                        properties.insert("price".into(), json!(price));
                        properties.insert("currency".into(), Value::String("USD".into()));
                        if ev == "Product Added" {
                            properties.insert("quantity".into(), json!(r.random_range(1..3)));
                        }
                    }
                }
                ("track", "track", Some(ev.to_string()))
            }
            Kind::Order => {
                let currency = match r.random_range(0..20) {
                    0..=15 => "USD",
                    16..=18 => "EUR",
                    _ => "GBP",
                };
                let mut total = 0.0;
                let mut products = Vec::new();
                for _ in 0..r.random_range(1..4) {
                    let (id, _, _, price) = product(r.random_range(0..PRODUCTS));
                    let q = r.random_range(1..3);
                    total += price * q as f64;
                    products.push(json!({"product_id": id, "sku": format!("SKU-{}", &id[2..]), "price": price, "quantity": q}));
                }
                let total = (total * 100.0).round() / 100.0;
                properties.insert("order_id".into(), Value::String(format!("o-{n}")));
                properties.insert("total".into(), json!(total));
                properties.insert("revenue".into(), json!(total));
                properties.insert("currency".into(), Value::String(currency.into()));
                properties.insert("products".into(), Value::Array(products));
                revenue = Some(Revenue {
                    amount: total,
                    currency: currency.to_string(),
                });
                ("track", "order", Some("Order Completed".to_string()))
            }
            Kind::Identify => {
                let email = if for_segment && d == 1 {
                    // typed differently on the second device; the collector normalises
                    match r.random_range(0..3) {
                        0 => format!(" {}", p.email.to_uppercase()),
                        1 => format!("{}{} ", p.email[..1].to_uppercase(), &p.email[1..]),
                        _ => p.email.clone(),
                    }
                } else {
                    p.email.clone()
                };
                traits.insert("email".into(), Value::String(email));
                traits.insert(
                    "name".into(),
                    Value::String(format!("{} {}", p.first, p.last)),
                );
                traits.insert("plan".into(), Value::String(p.plan.to_string()));
                traits.insert(
                    "createdAt".into(),
                    Value::String(
                        ms_to_dt(p.created_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    ),
                );
                if let (Some(e164), Some(typed)) = (&p.phone, &p.phone_typed) {
                    let v = if for_segment {
                        typed.clone()
                    } else {
                        e164.clone()
                    };
                    traits.insert("phone".into(), Value::String(v));
                }
                ("identify", "identify", None)
            }
        };
        Body {
            seg_type,
            event_type,
            name,
            properties,
            context,
            traits,
            revenue,
        }
    }

    /// Identifiers as the collector derives them: user id, anonymous id, then
    /// email and phone from identify traits.
    fn identifiers(&self, n: usize) -> Vec<Identifier> {
        let s = self.slots[n];
        let p = &self.persons[s.person as usize];
        let d = s.device as usize;
        let mut ids = Vec::with_capacity(4);
        if s.known_user {
            ids.push(Identifier::new(IdType::UserId, p.user_id.clone()));
        }
        ids.push(Identifier::new(IdType::AnonymousId, p.anon[d].clone()));
        if s.kind == Kind::Identify {
            ids.push(Identifier::new(IdType::Email, p.email.clone()));
            if let Some(ph) = &p.phone {
                ids.push(Identifier::new(IdType::Phone, ph.clone()));
            }
        }
        ids
    }

    /// Event `n` as the canonical event the web collector would have produced.
    pub fn canonical(&self, n: usize) -> CanonicalEvent {
        let s = self.slots[n];
        let b = self.body(n, false);
        let occurred_at = ms_to_dt(s.ts_ms);
        // received a moment later
        let received_at = ms_to_dt(s.ts_ms + 150 + (n as i64 * 7919) % 2500);
        CanonicalEvent {
            claimed: Vec::new(),
            schema_version: SCHEMA_VERSION,
            event_id: format!("bench:{n}"),
            source: "web".into(),
            channel: Channel::Web,
            event_type: b.event_type.into(),
            name: b.name,
            occurred_at,
            received_at,
            identifiers: self.identifiers(n),
            target: Vec::new(),
            traits: b.traits,
            properties: socialcrm_schemas::JsonObject::from_map(&b.properties),
            revenue: b.revenue,
            context: socialcrm_schemas::JsonObject::from_map(&b.context),
        }
    }

    /// Event `n` as a Segment message (what analytics.js puts in a `/v1/batch` call).
    pub fn segment(&self, n: usize, id_prefix: &str) -> Value {
        let s = self.slots[n];
        let p = &self.persons[s.person as usize];
        let b = self.body(n, true);
        let mut m = Map::new();
        m.insert("type".into(), Value::String(b.seg_type.into()));
        m.insert("messageId".into(), Value::String(format!("{id_prefix}{n}")));
        m.insert(
            "anonymousId".into(),
            Value::String(p.anon[s.device as usize].clone()),
        );
        if s.known_user {
            m.insert("userId".into(), Value::String(p.user_id.clone()));
        }
        m.insert(
            "timestamp".into(),
            Value::String(ms_to_dt(s.ts_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        m.insert("context".into(), Value::Object(b.context));
        match s.kind {
            Kind::Identify => {
                m.insert("traits".into(), Value::Object(b.traits));
            }
            Kind::Page => {
                if let Some(n) = b.name {
                    m.insert("name".into(), Value::String(n));
                }
                m.insert("properties".into(), Value::Object(b.properties));
            }
            Kind::Track | Kind::Order => {
                m.insert("event".into(), Value::String(b.name.unwrap_or_default()));
                m.insert("properties".into(), Value::Object(b.properties));
            }
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_validate_and_are_deterministic() {
        let anchor = default_anchor_ms();
        let d = build(5000, 7, anchor);
        assert_eq!(d.slots.len(), 5000);
        let n = Normalizer::default();
        let now = Utc::now();
        let mut bytes = 0;
        for i in 0..d.slots.len() {
            let ev = d.canonical(i);
            let raw = serde_json::to_vec(&ev).expect("json");
            bytes += raw.len();
            let (parsed, rejected) =
                CanonicalEvent::parse_and_validate(&raw, &n, now).expect("valid");
            assert!(rejected.is_empty(), "{rejected:?}");
            assert_eq!(parsed.identifiers, ev.identifiers);
            assert!(ev.occurred_at.timestamp_millis() < anchor);
            assert!(ev.occurred_at.timestamp_millis() >= anchor - 91 * DAY_MS);
        }
        let avg = bytes / d.slots.len();
        assert!((400..=900).contains(&avg), "avg size {avg}");
        let again = build(5000, 7, anchor);
        assert_eq!(
            serde_json::to_string(&again.canonical(4321)).expect("json"),
            serde_json::to_string(&d.canonical(4321)).expect("json")
        );
        assert!(d.stats.persons_with_phone > 0);
        assert!(d.stats.orders > 0 && d.stats.identifies > 0);
    }
}
