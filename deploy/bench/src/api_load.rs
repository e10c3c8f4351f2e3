//! Data for the HTTP API benchmark (issue 6, docs/benchmarks.md "HTTP API"): a fresh
//! database with the production schema (the real migrations) filled server-side with
//! `INSERT ... SELECT ... FROM numbers(N)`: identities, events (and `events_by_id`
//! through its materialized view), an identity ledger, profiles and one completed
//! scoring run. No rows pass through this process.
//!
//! Everything is a function of the row number (`cityHash64(n, k)` for pseudo-random
//! draws), so two loads with the same sizes and anchor are identical. Customer `c`
//! (0 ≤ c < P) is `email:user<c>@example.com`, and its `customer_id` is the one the
//! pipeline would give a profile born from that email (`c_` + 16 hex digits of
//! SHA-256 of the identifier, `customer_id_for`). Profiles and scores are aggregated
//! from the same generator as the events, so their counts, first/last seen, orders
//! and revenue agree with the events table.
//!
//! SQL runs on ClickHouse 18.16: no JSONExtract, Map or window functions.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::ch;

/// The 20 product categories (10 products each; product `j` is in category `j % 20`).
pub const CATEGORIES: [&str; 20] = [
    "shoes",
    "bags",
    "hats",
    "books",
    "toys",
    "electronics",
    "kitchen",
    "garden",
    "beauty",
    "sports",
    "outdoor",
    "music",
    "games",
    "jewelry",
    "watches",
    "home_decor",
    "pet_supplies",
    "stationery",
    "coffee",
    "tea",
];

/// What a product of each category is called in its title.
const NOUNS: [&str; 20] = [
    "Sneakers",
    "Tote Bag",
    "Beanie",
    "Novel",
    "Puzzle",
    "Headphones",
    "Chef Knife",
    "Planter",
    "Face Cream",
    "Yoga Mat",
    "Tent",
    "Vinyl Record",
    "Board Game",
    "Necklace",
    "Watch",
    "Lamp",
    "Dog Bed",
    "Notebook",
    "Espresso Beans",
    "Green Tea",
];

const ADJECTIVES: [&str; 10] = [
    "Classic", "Organic", "Premium", "Compact", "Vintage", "Everyday", "Deluxe", "Eco", "Limited",
    "Urban",
];

const FIRST_NAMES: [&str; 32] = [
    "Ann", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Kira",
    "Liam", "Mia", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera",
    "Will", "Xena", "Yusuf", "Zoe", "Aiko", "Bruno", "Carla", "Dmitri", "Elif", "Farah",
];

const LAST_NAMES: [&str; 32] = [
    "Smith", "Jones", "Garcia", "Miller", "Davis", "Martin", "Bernard", "Dubois", "Rossi",
    "Bianchi", "Muller", "Schmidt", "Novak", "Kowalski", "Silva", "Santos", "Tanaka", "Sato",
    "Kim", "Lee", "Chen", "Wang", "Singh", "Patel", "Okafor", "Mensah", "Nilsson", "Berg",
    "Jensen", "Murphy", "Walsh", "Costa",
];

/// UTM campaigns (name, source, medium) carried in `context.campaign` of some web and
/// shop events.
const CAMPAIGNS: [(&str, &str, &str); 8] = [
    ("spring_sale", "newsletter", "email"),
    ("summer_drop", "instagram", "social"),
    ("black_friday", "google", "cpc"),
    ("newsletter_weekly", "newsletter", "email"),
    ("influencer_collab", "mastodon", "social"),
    ("retargeting", "facebook", "cpc"),
    ("launch_q3", "partner", "referral"),
    ("holiday_gift", "x", "social"),
];

/// Event types and channels the generator writes, sorted (per-customer counts are
/// summed by index: 18.16's sumMap takes numeric keys only).
const EVENT_TYPES: [&str; 10] = [
    "identify", "like", "mention", "message", "order", "page", "post", "reply", "reshare", "track",
];
const CHANNELS: [&str; 4] = ["shop", "social", "support", "web"];

/// Sizes and place of one load.
#[derive(Debug, Clone)]
pub struct LoadArgs {
    pub clickhouse: String,
    pub database: String,
    pub profiles: u64,
    pub events: u64,
    /// Unix seconds; events fall in the two years before it.
    pub anchor: i64,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub step: String,
    pub secs: f64,
}

#[derive(Debug, Serialize)]
pub struct TableSize {
    pub table: String,
    pub rows: u64,
    pub bytes_on_disk: u64,
    pub parts: u64,
}

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub database: String,
    pub profiles: u64,
    pub events: u64,
    pub anchor: i64,
    pub total_secs: f64,
    pub steps: Vec<Step>,
    pub tables: Vec<TableSize>,
    /// A few shares of the data, to size the segment filters against.
    pub shape: Vec<(String, u64)>,
}

/// Plain HTTP to ClickHouse with a long timeout: the big `INSERT ... SELECT`s run for
/// minutes, longer than the harness's usual client allows.
struct Ch {
    http: reqwest::Client,
    url: String,
}

impl Ch {
    fn new(url: &str) -> Result<Ch> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3600))
            .build()?;
        Ok(Ch {
            http,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    async fn query(&self, sql: &str) -> Result<String> {
        let resp = self
            .http
            .post(format!("{}/", self.url))
            .body(sql.to_string())
            .send()
            .await
            .with_context(|| format!("clickhouse at {}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.context("clickhouse answer")?;
        if !status.is_success() {
            let head: String = sql.chars().take(300).collect();
            bail!("clickhouse {status}: {}\nquery: {head}...", text.trim());
        }
        Ok(text)
    }

    async fn scalar(&self, sql: &str) -> Result<u64> {
        let t = self.query(sql).await?;
        t.trim()
            .parse()
            .with_context(|| format!("not a number: {t:?} from {sql}"))
    }
}

/// A SQL array literal of strings.
fn arr(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(","))
}

/// Replaces the `$NAME` tokens of a statement (tokens, not `format!`, because the
/// statements are full of JSON braces).
fn fill(sql: &str, a: &LoadArgs, run_id: &str) -> String {
    let campaign = |i: usize| -> Vec<&str> {
        CAMPAIGNS
            .iter()
            .map(|c| match i {
                0 => c.0,
                1 => c.1,
                _ => c.2,
            })
            .collect()
    };
    let mut tokens: Vec<(&str, String)> = vec![
        ("$DB", a.database.clone()),
        ("$P", a.profiles.to_string()),
        ("$E", a.events.to_string()),
        ("$A", a.anchor.to_string()),
        ("$RUN", run_id.to_string()),
        ("$CATS", arr(&CATEGORIES)),
        ("$NOUNS", arr(&NOUNS)),
        ("$ADJS", arr(&ADJECTIVES)),
        ("$FIRST", arr(&FIRST_NAMES)),
        ("$LAST", arr(&LAST_NAMES)),
        ("$CNAMES", arr(&campaign(0))),
        ("$CSOURCES", arr(&campaign(1))),
        ("$CMEDIUMS", arr(&campaign(2))),
        ("$TYPES", arr(&EVENT_TYPES)),
        ("$CHANNELS", arr(&CHANNELS)),
    ];
    // longest first, so `$A` does not eat the start of `$ADJS`
    tokens.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut s = sql.to_string();
    for (k, v) in tokens {
        s = s.replace(k, &v);
    }
    s
}

// Per-customer expressions of column `c` (see the module doc for the shape):
// half are social (c % 4 = 0 Mastodon, c % 4 = 2 X), 20 % have a phone, 70 % an
// anonymous id, 10 % a Telegram id (support chats), 30 % buy (hash-drawn).
// $CID and friends are expanded by `customer_exprs` before `fill`.
const CUSTOMER_EXPRS: &[(&str, &str)] = &[
    ("$EMAIL", "concat('user', toString(c), '@example.com')"),
    (
        "$CID",
        "concat('c_', lower(substring(hex(SHA256(concat('email:user', toString(c), '@example.com'))), 1, 16)))",
    ),
    ("$SOCIAL", "(c % 2 = 0)"),
    ("$NET", "if(c % 4 = 0, 'mastodon', 'x')"),
    (
        "$HANDLE",
        "if(c % 4 = 0, concat('@user', toString(c), '@mastodon.social'), toString(1000000000 + c))",
    ),
    ("$HASPHONE", "(c % 5 = 1)"),
    ("$PHONE", "concat('+1415', toString(2000000 + c % 7000000))"),
    ("$HASANON", "(c % 10 < 7)"),
    (
        "$ANON",
        "concat(substring(lower(hex(MD5(concat('anon', toString(c))))), 1, 8), '-', substring(lower(hex(MD5(concat('anon', toString(c))))), 9, 4), '-4', substring(lower(hex(MD5(concat('anon', toString(c))))), 14, 3), '-a', substring(lower(hex(MD5(concat('anon', toString(c))))), 18, 3), '-', substring(lower(hex(MD5(concat('anon', toString(c))))), 21, 12))",
    ),
    ("$HASTG", "(c % 10 = 3)"),
    ("$TG", "toString(500000000 + c)"),
    ("$BUYER", "(cityHash64(c, 3) % 100 < 30)"),
    ("$FAV", "(cityHash64(c, 7) % 20)"),
    (
        "$NAME",
        "concat(arrayElement($FIRST, toUInt32(cityHash64(c, 9) % 32 + 1)), ' ', arrayElement($LAST, toUInt32(cityHash64(c, 10) % 32 + 1)))",
    ),
    (
        "$FOLLOWERS",
        "toUInt64(floor(pow(10, 6 * pow((cityHash64(c, 8) % 1000000) / 1000000, 2))))",
    ),
    ("$CURRENCY", "if(c % 5 = 4, 'EUR', 'USD')"),
    // active window: starts in the last two years, ends between its start and the anchor
    ("$START", "($A - cityHash64(c, 4) % (730 * 86400))"),
    (
        "$STOP",
        "($A - cityHash64(c, 4) % (730 * 86400) + cityHash64(c, 5) % (cityHash64(c, 4) % (730 * 86400) + 1))",
    ),
];

/// Expands the per-customer tokens (longest first, so `$HASPHONE` is not taken for
/// `$PHONE`), then the global ones.
fn sql(template: &str, a: &LoadArgs, run_id: &str) -> String {
    let mut s = template.to_string();
    let mut exprs = CUSTOMER_EXPRS.to_vec();
    exprs.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    // twice: an expression may use another token
    for _ in 0..2 {
        for (k, v) in &exprs {
            s = s.replace(k, v);
        }
    }
    fill(&s, a, run_id)
}

/// The event generator: one row per event number `n`, with its customer `c`, channel,
/// type, time, products and revenue. The first P events give every customer one event
/// (an order for buyers, so 30 % have orders); the rest go to customers with a skew
/// (c = P·u^1.5: low numbers are heavy users).
const GEN: &str = "
SELECT n, c, ch, tp, at, j0, items, qty,
       if(tp = 'order', round(arraySum(arrayMap((j, q) -> q * (500 + cityHash64(j, 29) % 19500) / 100, items, qty)), 2), 0.) AS rev,
       multiIf(ch = 'social', $NET, ch = 'shop', 'shopify', ch = 'support', 'telegram', 'web') AS src
FROM (
  SELECT n, c, ch,
    multiIf(ch = 'social', multiIf(t < 35, 'mention', t < 65, 'like', t < 80, 'reshare', t < 95, 'reply', 'post'),
            ch = 'shop', 'order',
            ch = 'support', 'message',
            multiIf(t < 60, 'page', t < 92, 'track', 'identify')) AS tp,
    toDateTime($START + cityHash64(n, 24) % ($STOP - $START + 1)) AS at,
    if(cityHash64(n, 25) % 100 < 70, $FAV + 20 * (cityHash64(n, 26) % 10), cityHash64(n, 26) % 200) AS j0,
    arrayMap(i -> (j0 + i * 37) % 200, range(toUInt64(if(tp = 'order', 1 + cityHash64(n, 27) % 3, 1)))) AS items,
    arrayMap(i -> 1 + cityHash64(n, 28 + i) % 2, range(toUInt64(if(tp = 'order', 1 + cityHash64(n, 27) % 3, 1)))) AS qty
  FROM (
    SELECT n, c, t,
      multiIf(n < $P AND $BUYER, 'shop',
              $SOCIAL AND r < 45, 'social',
              $BUYER AND r >= 45 AND r < 55, 'shop',
              $HASTG AND r >= 55 AND r < 63, 'support',
              'web') AS ch
    FROM (
      SELECT number AS n,
        if(number < $P, number, least(toUInt64($P - 1), toUInt64(floor($P * pow((cityHash64(number, 21) % 1000000007) / 1000000007, 1.5))))) AS c,
        cityHash64(number, 22) % 100 AS r,
        cityHash64(number, 23) % 100 AS t
      FROM numbers($E)
    )
  )
)";

/// Product expressions of a product number `j` inside lambdas.
const TITLE: &str = "concat(arrayElement($ADJS, toUInt32(intDiv(j, 20) % 10 + 1)), ' ', arrayElement($NOUNS, toUInt32(j % 20 + 1)))";
const CAT: &str = "arrayElement($CATS, toUInt32(j % 20 + 1))";
const PRICE: &str = "((500 + cityHash64(j, 29) % 19500) / 100)";

fn events_insert() -> String {
    let line_item = format!(
        "concat('{{\"product_id\":\"p', toString(j), '\",\"title\":\"', {TITLE}, '\",\"category\":\"', {CAT}, '\",\"quantity\":', toString(q), ',\"unit_price\":', toString({PRICE}), '}}')"
    );
    let track = format!(
        "arrayStringConcat(arrayMap(j -> concat('{{\"product_id\":\"p', toString(j), '\",\"name\":\"', {TITLE}, '\",\"category\":\"', {CAT}, '\",\"price\":', toString({PRICE}), '}}'), items), '')"
    );
    let page = format!(
        "arrayStringConcat(arrayMap(j -> concat('{{\"path\":\"/p/', toString(j), '\",\"title\":\"', {TITLE}, '\",\"url\":\"https://shop.example.com/p/', toString(j), '\"}}'), items), '')"
    );
    format!(
        "INSERT INTO $DB.events (event_id, customer_id, source, channel, type, name, occurred_at, occurred_at_ms,
   received_at, identifier_types, identifier_values, target_types, target_values, traits, properties, context,
   revenue_amount, revenue_currency, kafka_partition, kafka_offset, ingested_at, version, primary_id)
SELECT
  multiIf(ch = 'web', concat('web:ajs-', lower(hex(MD5(toString(n))))),
          ch = 'social', if(c % 4 = 0, concat('mastodon:mastodon.social:notification:', toString(n)), concat('x:mention:', toString(n))),
          ch = 'shop', concat('shopify:shop.example.com:order:', toString(n)),
          concat('telegram:bot:update:', toString(n))) AS event_id,
  $CID AS customer_id,
  src AS source, ch AS channel, tp AS type,
  multiIf(tp = 'track', arrayElement(['Product Viewed','Product Added','Products Searched','Product List Viewed','Checkout Started','Cart Viewed'], toUInt32(cityHash64(n, 30) % 6 + 1)),
          tp = 'order', 'Order Completed', '') AS name,
  at AS occurred_at, toUInt16(n % 1000) AS occurred_at_ms, at + 1 + n % 5 AS received_at,
  multiIf(ch = 'social', [$NET], ch = 'support', ['telegram'], ch = 'web' AND $HASANON, ['email', 'anonymous_id'], ['email']) AS identifier_types,
  multiIf(ch = 'social', [$HANDLE], ch = 'support', [$TG], ch = 'web' AND $HASANON, [$EMAIL, $ANON], [$EMAIL]) AS identifier_values,
  if(ch = 'social' AND tp != 'post', [$NET], emptyArrayString()) AS target_types,
  if(ch = 'social' AND tp != 'post',
     [if(c % 4 = 0,
         concat('@user', toString(4 * least(toUInt64(intDiv($P - 1, 4)), toUInt64(floor(($P / 4) * pow((cityHash64(n, 33) % 1000000) / 1000000, 3))))), '@mastodon.social'),
         toString(1000000000 + 2 + 4 * least(toUInt64(intDiv($P - 3, 4)), toUInt64(floor(($P / 4) * pow((cityHash64(n, 33) % 1000000) / 1000000, 3))))))],
     emptyArrayString()) AS target_values,
  multiIf(ch = 'social', concat('{{\"followers_count\":', toString($FOLLOWERS), ',\"name\":\"', $NAME, '\"}}'),
          tp = 'identify', concat('{{\"email\":\"', $EMAIL, '\",\"name\":\"', $NAME, '\"}}'),
          '{{}}') AS traits,
  multiIf(tp = 'order', concat('{{\"order_id\":\"o', toString(n), '\",\"line_items\":[',
                          arrayStringConcat(arrayMap((j, q) -> {line_item}, items, qty), ','), ']}}'),
          tp = 'track', {track},
          tp = 'page', {page},
          ch = 'social', concat('{{\"status_id\":\"', toString(n), '\"}}'),
          tp = 'message', concat('{{\"text_length\":', toString(10 + cityHash64(n, 34) % 400), '}}'),
          '{{}}') AS properties,
  if(ch IN ('web', 'shop') AND cityHash64(n, 31) % 100 < 15,
     concat('{{\"campaign\":{{\"name\":\"', arrayElement($CNAMES, toUInt32(cityHash64(n, 32) % 8 + 1)),
            '\",\"source\":\"', arrayElement($CSOURCES, toUInt32(cityHash64(n, 32) % 8 + 1)),
            '\",\"medium\":\"', arrayElement($CMEDIUMS, toUInt32(cityHash64(n, 32) % 8 + 1)), '\"}}}}'),
     '{{}}') AS context,
  rev AS revenue_amount,
  if(tp = 'order', $CURRENCY, '') AS revenue_currency,
  toInt32(n % 6) AS kafka_partition, toInt64(intDiv(n, 6)) AS kafka_offset,
  received_at + 2 AS ingested_at, toUInt64(1) AS version,
  multiIf(ch = 'social', concat($NET, ':', $HANDLE), ch = 'support', concat('telegram:', $TG), concat('email:', $EMAIL)) AS primary_id
FROM ({GEN})"
    )
}

/// Identifiers of customer `c` as parallel arrays, strongest first.
const ID_TYPES: &str = "arrayConcat(['email'], if($HASPHONE, ['phone'], emptyArrayString()), if($SOCIAL, [$NET], emptyArrayString()), if($HASTG, ['telegram'], emptyArrayString()), if($HASANON, ['anonymous_id'], emptyArrayString()))";
const ID_VALUES: &str = "arrayConcat([$EMAIL], if($HASPHONE, [$PHONE], emptyArrayString()), if($SOCIAL, [$HANDLE], emptyArrayString()), if($HASTG, [$TG], emptyArrayString()), if($HASANON, [$ANON], emptyArrayString()))";

fn identities_insert() -> String {
    format!(
        "INSERT INTO $DB.identities (id_type, id_value, customer_id, is_active, first_seen, updated_at, version)
SELECT id_type, id_value, $CID, 1, toDateTime($START), toDateTime($START), toUInt64(1)
FROM (SELECT number AS c, {ID_TYPES} AS types, {ID_VALUES} AS vals FROM numbers($P))
ARRAY JOIN types AS id_type, vals AS id_value"
    )
}

/// A create for the email, then a link per other identifier, dated by the customer's
/// first activity plus a few hours per identifier.
fn ledger_insert() -> String {
    format!(
        "INSERT INTO $DB.identity_ledger (entry_id, at, action, customer_id, id_type, id_value, merged_customer_id, rule, reason, event_id, version, seq)
SELECT lower(hex(MD5(concat(toString(c), ':', id_type, ':', id_value)))),
       toDateTime($START + (i - 1) * 3600 * (1 + cityHash64(c, 40) % 48)),
       if(i = 1, 'create', 'link'), $CID, id_type, id_value, '', '', '',
       concat('web:ajs-', lower(hex(MD5(toString(c))))), toUInt64(1), toUInt32(i - 1)
FROM (SELECT number AS c, {ID_TYPES} AS types, {ID_VALUES} AS vals FROM numbers($P))
ARRAY JOIN types AS id_type, vals AS id_value, arrayEnumerate(types) AS i"
    )
}

/// Per-customer aggregates of the event generator, plus the derived scores (the
/// documented RFM grid and lifecycle rules, with fixed breakpoints instead of
/// quintiles), in a scratch table that profiles and scores are both written from.
fn agg_create() -> String {
    format!(
        "CREATE TABLE $DB._bench_agg ENGINE = MergeTree ORDER BY c AS
SELECT *,
  multiIf(orders = 0, '',
          r = 5 AND fm >= 4, 'champions', r = 4 AND fm = 5, 'champions',
          r >= 3 AND fm >= 3, 'loyal',
          r = 5 AND fm = 1, 'new',
          r >= 4 AND fm >= 2 AND fm <= 3, 'potential_loyalist',
          r = 4 AND fm = 1, 'promising',
          r = 1 AND fm >= 4, 'cant_lose',
          r <= 2 AND fm >= 3, 'at_risk',
          r = 3 AND fm = 2, 'needs_attention',
          r = 3 AND fm = 1, 'about_to_sleep',
          r = 2, 'hibernating', 'lost') AS rfm_segment,
  multiIf(orders = 0, 'prospect',
          order_days > 3 * cadence, 'churned',
          order_days > 1.5 * cadence, 'at_risk',
          orders >= 4, 'loyal', orders >= 2, 'repeat', 'new_customer') AS lifecycle_stage,
  round(least(100., greatest(0., 100 * (1 - exp(-event_count / 8)) * exp(-days_since / 365) + 4 * (length(ckeys) - 1)
        + (cityHash64(c, 41) % 100) / 20)), 1) AS engagement_score,
  if($SOCIAL, round(least(100., 60 * log10(1 + followers) / 6 + 40 * pow((cityHash64(c, 42) % 1000) / 1000, 4)), 1), 0.) AS influence_score,
  if(orders > 0 OR has(tkeys, 'track'),
     arraySlice([arrayElement($CATS, toUInt32($FAV + 1)),
                 arrayElement($CATS, toUInt32(($FAV + 1 + cityHash64(c, 43) % 9) % 20 + 1)),
                 arrayElement($CATS, toUInt32(($FAV + 10 + cityHash64(c, 44) % 9) % 20 + 1))], 1, 1 + cityHash64(c, 45) % 3),
     emptyArrayString()) AS top_categories,
  arraySlice(arraySort((k, v) -> -toInt64(v), ckeys, cvals), 1, 3) AS top_channels
FROM (
  SELECT *,
    (toUInt32($A) - toUInt32(last_seen)) / 86400 AS days_since,
    if(orders = 0, 0., (toUInt32($A) - toUInt32(last_order)) / 86400) AS order_days,
    if(orders > 1, greatest(7., (toUInt32(last_order) - toUInt32(first_order)) / 86400 / (orders - 1)), 90.) AS cadence,
    if(orders = 0, 0, multiIf(order_days <= 30, 5, order_days <= 90, 4, order_days <= 180, 3, order_days <= 365, 2, 1)) AS r,
    if(orders = 0, 0, multiIf(orders >= 6, 5, orders >= 4, 4, orders >= 3, 3, orders >= 2, 2, 1)) AS f,
    if(orders = 0, 0, multiIf(revenue >= 400, 5, revenue >= 200, 4, revenue >= 100, 3, revenue >= 50, 2, 1)) AS m,
    toUInt8(ceil((f + m) / 2)) AS fm,
    if($SOCIAL, $FOLLOWERS, 0) AS followers
  FROM (
    SELECT c, event_count, arrayMap(i -> arrayElement($TYPES, i), tm.1) AS tkeys, tm.2 AS tvals,
      arrayMap(i -> arrayElement($CHANNELS, i), cm.1) AS ckeys, cm.2 AS cvals, sources,
      first_seen, last_seen, orders, revenue, first_order, last_order, social_interactions
    FROM (
      SELECT c, count() AS event_count,
        sumMap([toUInt8(indexOf($TYPES, tp))], [toUInt64(1)]) AS tm,
        sumMap([toUInt8(indexOf($CHANNELS, ch))], [toUInt64(1)]) AS cm,
        arraySort(groupUniqArray(src)) AS sources,
        min(at) AS first_seen, max(at) AS last_seen,
        countIf(tp = 'order') AS orders, sum(rev) AS revenue,
        minIf(at, tp = 'order') AS first_order, maxIf(at, tp = 'order') AS last_order,
        countIf(ch = 'social' AND tp IN ('reply', 'reshare', 'like')) AS social_interactions
      FROM ({GEN})
      GROUP BY c
    )
  )
)"
    )
}

const SCORE_COMPONENTS: &str = "concat('{\"details\":\"crm.v_scores, or socialcrm score explain <type:value>\",\"rfm\":[', toString(r), ',', toString(f), ',', toString(m), '],\"rfm_segment\":\"', rfm_segment, '\",\"run_id\":\"$RUN\",\"top_categories\":[', arrayStringConcat(arrayMap(x -> concat('\"', x, '\"'), top_categories), ','), '],\"top_channels\":[', arrayStringConcat(arrayMap(x -> concat('\"', x, '\"'), top_channels), ','), ']}')";

fn profiles_insert() -> String {
    format!(
        "INSERT INTO $DB.profiles (customer_id, version, is_active, merged_into, identifier_types, identifier_values,
   traits, channels, sources, event_count, event_count_types, event_count_values, channel_count_keys,
   channel_count_values, first_seen, last_seen, order_count, revenue_currencies, revenue_amounts,
   engagement_score, influence_score, lifecycle_stage, score_components, merged_from, updated_at, flags,
   display_name, rfm_segment, top_categories, top_channels)
SELECT $CID, toUInt64(1000 + event_count), 1, '', {ID_TYPES}, {ID_VALUES},
  concat('{{\"email\":\"', $EMAIL, '\"', if($SOCIAL, concat(',\"followers_count\":', toString(followers)), ''),
         ',\"name\":\"', $NAME, '\"', if($HASPHONE, concat(',\"phone\":\"', $PHONE, '\"'), ''), '}}'),
  ckeys, sources, event_count, tkeys, tvals, ckeys, cvals, first_seen, last_seen, orders,
  if(orders > 0, [$CURRENCY], emptyArrayString()), if(orders > 0, [round(revenue, 2)], emptyArrayFloat64()),
  engagement_score, influence_score, lifecycle_stage, {SCORE_COMPONENTS}, emptyArrayString(),
  toDateTime($A), emptyArrayString(), $NAME, rfm_segment, top_categories, top_channels
FROM $DB._bench_agg"
    )
}

fn scores_insert() -> String {
    "INSERT INTO $DB.scores (customer_id, run_id, scored_at, engagement_score, influence_score, engagement_raw,
   influence_raw, recency_days, frequency, monetary, channels_in_window, reach, amplification, pagerank, rfm_r,
   rfm_f, rfm_m, rfm_segment, lifecycle_stage, top_categories, top_channels, networks, network_followers,
   network_amplification, components)
SELECT $CID, '$RUN', toDateTime($A), engagement_score, influence_score,
  round(event_count * exp(-days_since / 365), 3), round(influence_score / 100, 4), round(days_since, 2), orders,
  round(revenue, 2), toUInt32(length(ckeys)), round(log10(1 + followers), 4), toFloat64(social_interactions),
  round(influence_score / 1e7, 10), toUInt8(r), toUInt8(f), toUInt8(m), rfm_segment, lifecycle_stage,
  top_categories, top_channels,
  if($SOCIAL, [$NET], emptyArrayString()), if($SOCIAL, [toFloat64(followers)], emptyArrayFloat64()),
  if($SOCIAL, [toFloat64(social_interactions)], emptyArrayFloat64()),
  concat('{\"engagement\":{\"score\":', toString(engagement_score), ',\"dispersion\":{\"channels\":', toString(length(ckeys)),
         '}},\"influence\":{\"score\":', toString(influence_score), ',\"reach\":{\"followers\":', toString(followers),
         '}},\"lifecycle\":{\"stage\":\"', lifecycle_stage, '\",\"cadence_days\":', toString(round(cadence, 1)),
         '},\"rfm\":{\"r\":', toString(r), ',\"f\":', toString(f), ',\"m\":', toString(m), ',\"segment\":\"', rfm_segment, '\"}}')
FROM $DB._bench_agg"
        .to_string()
}

const SCORE_RUN_INSERT: &str = "INSERT INTO $DB.score_runs (run_id, started_at, finished_at, as_of, customers, edges,
   pagerank_iterations, pagerank_delta, seconds, config)
SELECT '$RUN', toDateTime($A), toDateTime($A + 78), toDateTime($A), count(), toUInt64(5000000), toUInt32(15), 8.4e-7, 77.5,
  '{\"source\":\"socialcrm-bench api-load\"}'
FROM $DB._bench_agg";

/// The run's influencer leaderboards, by the scoring job's own statement.
fn ranks_insert() -> String {
    use socialcrm_pipeline::scoring::job::{leaderboards_sql, LEADERBOARD_ROWS};
    leaderboards_sql("$DB").replacen('?', "'$RUN'", 1).replacen(
        '?',
        &LEADERBOARD_ROWS.to_string(),
        1,
    )
}

/// Tables whose parts are merged at the end, as in a settled production database.
const OPTIMIZED: [&str; 6] = [
    "identities",
    "identity_ledger",
    "profiles",
    "scores",
    "events_by_id",
    "events",
];

pub async fn load(a: &LoadArgs) -> Result<LoadReport> {
    if a.profiles < 8 || a.events < a.profiles {
        bail!("need at least 8 profiles and as many events as profiles");
    }
    if !a
        .database
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("database name {:?}: letters, digits and _ only", a.database);
    }
    let c = Ch::new(&a.clickhouse)?;
    let run_id = run_id(a.anchor);
    let start = Instant::now();
    let mut steps = Vec::new();
    let mut step = |name: &str, t: Instant| {
        let secs = t.elapsed().as_secs_f64();
        eprintln!("[api-load] {name}: {secs:.1} s");
        steps.push(Step {
            step: name.to_string(),
            secs,
        });
    };

    let t = Instant::now();
    c.query(&format!("DROP DATABASE IF EXISTS {}", a.database))
        .await?;
    let cfg = ch::config(&a.clickhouse, &a.database);
    let report = socialcrm_schemas::migrations::migrate(&cfg)
        .await
        .context("migrations")?;
    eprintln!("[api-load] migrations applied: {:?}", report.applied);
    for col in [
        "display_name",
        "rfm_segment",
        "top_categories",
        "top_channels",
    ] {
        let n = c
            .scalar(&format!(
                "SELECT count() FROM system.columns WHERE database = '{}' AND table = 'profiles' AND name = '{col}'",
                a.database
            ))
            .await?;
        if n == 0 {
            bail!("profiles has no column {col}: migration 0008 (surfaces) is missing");
        }
    }
    step("drop + migrate", t);

    let statements: Vec<(&str, String)> = vec![
        ("identities", identities_insert()),
        ("identity_ledger", ledger_insert()),
        ("events (+ events_by_id)", events_insert()),
        ("aggregates (scratch)", agg_create()),
        ("profiles", profiles_insert()),
        ("scores", scores_insert()),
        ("influencer_ranks", ranks_insert()),
        ("score_runs", SCORE_RUN_INSERT.to_string()),
    ];
    for (name, template) in statements {
        let t = Instant::now();
        c.query(&sql(&template, a, &run_id))
            .await
            .with_context(|| format!("step {name}"))?;
        step(name, t);
    }

    let t = Instant::now();
    for table in OPTIMIZED {
        c.query(&format!("OPTIMIZE TABLE {}.{table} FINAL", a.database))
            .await?;
    }
    step("optimize final", t);

    let shape = shape(&c, a).await?;
    c.query(&format!("DROP TABLE IF EXISTS {}._bench_agg", a.database))
        .await?;
    let tables = sizes(&c, &a.database).await?;
    let expected = [("profiles", a.profiles), ("events", a.events)];
    for (table, n) in expected {
        let got = tables
            .iter()
            .find(|s| s.table == table)
            .map_or(0, |s| s.rows);
        if got != n {
            bail!("{table} holds {got} rows, expected {n}");
        }
    }
    Ok(LoadReport {
        database: a.database.clone(),
        profiles: a.profiles,
        events: a.events,
        anchor: a.anchor,
        total_secs: start.elapsed().as_secs_f64(),
        steps,
        tables,
        shape,
    })
}

/// Run id in the scoring job's format (`20261123T024230.938Z-ec5c5c08`).
fn run_id(anchor: i64) -> String {
    let at = chrono::DateTime::from_timestamp(anchor, 0).unwrap_or_default();
    format!("{}-bench000", at.format("%Y%m%dT%H%M%S%.3fZ"))
}

async fn shape(c: &Ch, a: &LoadArgs) -> Result<Vec<(String, u64)>> {
    let db = &a.database;
    let queries = [
        ("profiles with orders", format!("SELECT count() FROM {db}._bench_agg WHERE orders > 0")),
        ("engagement >= 60", format!("SELECT count() FROM {db}._bench_agg WHERE engagement_score >= 60")),
        ("lifecycle loyal or repeat", format!("SELECT count() FROM {db}._bench_agg WHERE lifecycle_stage IN ('loyal', 'repeat')")),
        ("active within 365 days", format!("SELECT count() FROM {db}._bench_agg WHERE last_seen >= toDateTime({} - 365 * 86400)", a.anchor)),
        ("engagement >= 60, loyal/repeat, active 365 d", format!("SELECT count() FROM {db}._bench_agg WHERE engagement_score >= 60 AND lifecycle_stage IN ('loyal', 'repeat') AND last_seen >= toDateTime({} - 365 * 86400)", a.anchor)),
        ("rfm champions", format!("SELECT count() FROM {db}._bench_agg WHERE rfm_segment = 'champions'")),
        ("channels social and shop", format!("SELECT count() FROM {db}._bench_agg WHERE has(ckeys, 'social') AND has(ckeys, 'shop')")),
        ("top category coffee", format!("SELECT count() FROM {db}._bench_agg WHERE has(top_categories, 'coffee')")),
        ("influence > 50", format!("SELECT count() FROM {db}._bench_agg WHERE influence_score > 50")),
        ("max events of one customer", format!("SELECT max(event_count) FROM {db}._bench_agg")),
    ];
    let mut out = Vec::new();
    for (name, q) in queries {
        out.push((name.to_string(), c.scalar(&q).await?));
    }
    Ok(out)
}

async fn sizes(c: &Ch, db: &str) -> Result<Vec<TableSize>> {
    let text = c
        .query(&format!(
            "SELECT table, sum(rows), sum(bytes_on_disk), count() FROM system.parts
             WHERE database = '{db}' AND active GROUP BY table ORDER BY table FORMAT TabSeparated"
        ))
        .await?;
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if let [table, rows, bytes, parts] = f[..] {
            out.push(TableSize {
                table: table.to_string(),
                rows: rows.parse()?,
                bytes_on_disk: bytes.parse()?,
                parts: parts.parse()?,
            });
        }
    }
    Ok(out)
}

pub fn print(r: &LoadReport) {
    println!(
        "loaded {} in {:.1} s: {} profiles, {} events",
        r.database, r.total_secs, r.profiles, r.events
    );
    for s in &r.steps {
        println!("  {:<28} {:>8.1} s", s.step, s.secs);
    }
    println!(
        "  {:<28} {:>12} {:>10} {:>6}",
        "table", "rows", "MiB", "parts"
    );
    for t in &r.tables {
        println!(
            "  {:<28} {:>12} {:>10.1} {:>6}",
            t.table,
            t.rows,
            t.bytes_on_disk as f64 / 1048576.0,
            t.parts
        );
    }
    for (k, v) in &r.shape {
        println!("  {k:<46} {v:>10}");
    }
}

/// `api-urls`: `count` lookup URLs of existing identifiers, drawn with a fixed seed.
pub async fn urls(
    clickhouse: &str,
    db: &str,
    base: &str,
    count: u64,
    seed: u64,
) -> Result<Vec<String>> {
    let c = Ch::new(clickhouse)?;
    let text = c
        .query(&format!(
            "SELECT id_type, id_value FROM {db}.identities WHERE is_active = 1
             ORDER BY cityHash64(id_type, id_value, {seed}) LIMIT {count} FORMAT TabSeparated"
        ))
        .await?;
    let base = base.trim_end_matches('/');
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some((t, v)) = line.split_once('\t') {
            out.push(format!(
                "{base}/v1/profiles/lookup?id={}",
                percent_encode(&format!("{t}:{v}"))
            ));
        }
    }
    if out.is_empty() {
        bail!("{db}.identities is empty: run api-load first");
    }
    Ok(out)
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_of_identifiers() {
        assert_eq!(
            percent_encode("mastodon:@user4@mastodon.social"),
            "mastodon%3A%40user4%40mastodon.social"
        );
        assert_eq!(
            percent_encode("phone:+14152000001"),
            "phone%3A%2B14152000001"
        );
    }

    #[test]
    fn every_token_is_expanded() {
        let a = LoadArgs {
            clickhouse: String::new(),
            database: "db".into(),
            profiles: 10,
            events: 100,
            anchor: 1_700_000_000,
        };
        for s in [
            events_insert(),
            identities_insert(),
            ledger_insert(),
            agg_create(),
            profiles_insert(),
            scores_insert(),
            ranks_insert(),
            SCORE_RUN_INSERT.to_string(),
        ] {
            let out = sql(&s, &a, "run");
            assert!(!out.contains('$'), "unexpanded token in {out}");
        }
    }
}
