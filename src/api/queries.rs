//! The marketers' questions, answered from ClickHouse: one module for the HTTP API,
//! the web page and the CLI, so the three always agree. Analytical answers read the
//! documented views (`schemas/migrations/0009_marketer_views.sql`, docs/marketers.md).

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use socialcrm_pipeline::rows::{LedgerRow, ProfileRow};
use socialcrm_pipeline::scoring::job::{ScoreRow, LEADERBOARD_ROWS};
use socialcrm_pipeline::scoring::ScoringConfig;
use socialcrm_schemas::Normalizer;

use super::filter::{bind_all, SegmentFilter};
use super::CampaignCost;

/// Why a question has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The caller asked wrongly (the message says how to ask).
    #[error("{0}")]
    BadRequest(String),
    /// ClickHouse failed or is down: worth a retry.
    #[error("ClickHouse: {0}")]
    Storage(String),
}

impl From<clickhouse::error::Error> for QueryError {
    fn from(e: clickhouse::error::Error) -> Self {
        QueryError::Storage(e.to_string())
    }
}

pub type QResult<T> = Result<T, QueryError>;

/// Social interaction types that count as advocacy (the customer acting toward the
/// brand), weighted by `scoring.type_weights`.
pub const ADVOCACY_TYPES: &[&str] = &[
    "mention", "reply", "reshare", "quote", "post", "like", "follow",
];

/// What the queries need: a ClickHouse client and the settings that shape answers.
#[derive(Clone)]
pub struct Queries {
    pub client: Client,
    pub normalizer: std::sync::Arc<Normalizer>,
    /// `[privacy]` hashing: identifiers typed in clear are looked up by their hash.
    pub hasher: Option<socialcrm_schemas::privacy::Hasher>,
    pub scoring: ScoringConfig,
    pub recent_events: u64,
    pub campaign_costs: BTreeMap<String, CampaignCost>,
}

/// RFC 3339 of unix seconds (how every time in the API is written).
pub fn time(secs: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(secs), 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// `(?, ?, ...)` for `n` values: an `IN` list that the primary key can use (18.16
/// cannot use an index for `IN [array]`).
fn in_list(n: usize) -> String {
    format!("({})", vec!["?"; n.max(1)].join(", "))
}

fn bind_strs(mut q: clickhouse::query::Query, values: &[String]) -> clickhouse::query::Query {
    if values.is_empty() {
        return q.bind("");
    }
    for v in values {
        q = q.bind(v.as_str());
    }
    q
}

fn zip_json<V: Serialize>(k: &[String], v: &[V]) -> Value {
    k.iter()
        .zip(v)
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect::<Map<_, _>>()
        .into()
}

/// The JSON form of a stored profile row (CLI `profile get --json` and the API).
pub fn profile_json(p: &ProfileRow) -> Value {
    let sc: Value = serde_json::from_str(&p.score_components).unwrap_or(json!({}));
    json!({
        "customer_id": p.customer_id,
        "display_name": p.display_name,
        "identifiers": p.identifier_types.iter().zip(&p.identifier_values)
            .map(|(t, v)| format!("{t}:{v}")).collect::<Vec<_>>(),
        "traits": serde_json::from_str::<Value>(&p.traits).unwrap_or(json!({})),
        "channels": p.channels,
        "sources": p.sources,
        "event_count": p.event_count,
        "event_counts": zip_json(&p.event_count_types, &p.event_count_values),
        "channel_counts": zip_json(&p.channel_count_keys, &p.channel_count_values),
        "first_seen": time(p.first_seen),
        "last_seen": time(p.last_seen),
        "order_count": p.order_count,
        "revenue": zip_json(&p.revenue_currencies, &p.revenue_amounts),
        "engagement_score": p.engagement_score,
        "influence_score": p.influence_score,
        "lifecycle_stage": p.lifecycle_stage,
        "rfm_segment": p.rfm_segment,
        "rfm": sc.get("rfm").cloned().unwrap_or(Value::Null),
        "top_categories": p.top_categories,
        "top_channels": p.top_channels,
        "score_components": sc,
        "flags": p.flags,
        "merged_from": p.merged_from,
        "version": p.version,
    })
}

/// One recent event of a profile.
#[derive(Debug, Row, Deserialize, Serialize)]
pub struct RecentEvent {
    pub event_id: String,
    #[serde(skip_serializing)]
    pub occurred_at: u32,
    pub primary_id: String,
    pub source: String,
    pub channel: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub name: String,
    pub revenue_amount: f64,
    pub revenue_currency: String,
}

/// Columns of [`RecentEvent`] over `events_by_id`.
pub const RECENT_EVENT_COLUMNS: &str =
    "event_id, toUInt32(occurred_at) AS occurred_at, primary_id, \
    source, channel, type AS event_type, name, revenue_amount, revenue_currency";

/// A row of a segment (preview, export) or a search hit.
#[derive(Debug, Row, Deserialize)]
pub struct SegmentRow {
    pub customer_id: String,
    pub display_name: String,
    pub email: String,
    pub phone: String,
    pub engagement_score: f64,
    pub influence_score: f64,
    pub lifecycle_stage: String,
    pub rfm_segment: String,
    pub channels: Vec<String>,
    pub top_categories: Vec<String>,
    pub last_seen: u32,
    pub order_count: u64,
    pub revenue_currencies: Vec<String>,
    pub revenue_amounts: Vec<f64>,
}

/// Columns of [`SegmentRow`] over `v_segment_profiles`.
const SEGMENT_COLUMNS: &str = "customer_id, display_name, email, phone, engagement_score, \
    influence_score, lifecycle_stage, rfm_segment, channels, top_categories, \
    toUInt32(last_seen) AS last_seen, order_count, revenue_currencies, revenue_amounts";

/// CSV header of segment exports (one column per [`SegmentRow::csv_record`] field).
pub const CSV_HEADER: &[&str] = &[
    "customer_id",
    "name",
    "email",
    "phone",
    "engagement_score",
    "influence_score",
    "lifecycle_stage",
    "rfm_segment",
    "channels",
    "top_categories",
    "last_seen",
    "order_count",
    "revenue",
];

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR) gets a
/// leading `'` (OWASP CSV injection); names and handles come from strangers.
fn csv_safe(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

impl SegmentRow {
    fn revenue(&self) -> String {
        self.revenue_currencies
            .iter()
            .zip(&self.revenue_amounts)
            .map(|(c, a)| format!("{a:.2} {c}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn to_json(&self) -> Value {
        json!({
            "customer_id": self.customer_id,
            "name": self.display_name,
            "email": self.email,
            "phone": self.phone,
            "engagement_score": self.engagement_score,
            "influence_score": self.influence_score,
            "lifecycle_stage": self.lifecycle_stage,
            "rfm_segment": self.rfm_segment,
            "channels": self.channels,
            "top_categories": self.top_categories,
            "last_seen": time(self.last_seen),
            "order_count": self.order_count,
            "revenue": zip_json(&self.revenue_currencies, &self.revenue_amounts),
        })
    }

    /// Fields in [`CSV_HEADER`] order, safe for spreadsheets.
    pub fn csv_record(&self) -> [String; 13] {
        [
            self.customer_id.clone(),
            csv_safe(&self.display_name),
            csv_safe(&self.email),
            csv_safe(&self.phone),
            format!("{:.1}", self.engagement_score),
            format!("{:.1}", self.influence_score),
            self.lifecycle_stage.clone(),
            self.rfm_segment.clone(),
            self.channels.join("|"),
            csv_safe(&self.top_categories.join("|")),
            time(self.last_seen),
            self.order_count.to_string(),
            self.revenue(),
        ]
    }
}

#[derive(Debug, Row, Deserialize)]
struct Count {
    n: u64,
}

#[derive(Debug, Row, Deserialize)]
pub struct NameRow {
    pub customer_id: String,
    pub display_name: String,
    pub identifier_types: Vec<String>,
    pub identifier_values: Vec<String>,
}

/// Names of live profiles known without asking ClickHouse (the serve process's
/// read model), by exact customer id.
pub type KnownNames<'a> = &'a (dyn Fn(&str) -> Option<NameRow> + Send + Sync);

#[derive(Debug, Row, Deserialize)]
struct InfluenceRow {
    customer_id: String,
    influence_score: f64,
    reach: f64,
    amplification: f64,
    pagerank: f64,
    networks: Vec<String>,
    network_followers: Vec<f64>,
    network_amplification: Vec<f64>,
}

#[derive(Debug, Row, Deserialize)]
struct AdvocateRow {
    customer_id: String,
    display_name: String,
    identifier_types: Vec<String>,
    identifier_values: Vec<String>,
    engagement_score: f64,
    influence_score: f64,
    advocacy: f64,
    actions: u64,
}

/// Social handles of an identifier list (what a leaderboard shows next to a name).
fn handles(types: &[String], values: &[String]) -> Vec<String> {
    types
        .iter()
        .zip(values)
        .filter(|(t, _)| {
            !matches!(
                t.as_str(),
                "email" | "phone" | "anonymous_id" | "device_id" | "user_id"
            )
        })
        .filter(|(t, _)| !t.starts_with("shopify") && !t.starts_with("woocommerce"))
        .map(|(t, v)| format!("{t}:{v}"))
        .collect()
}

/// A network name (`mastodon`, `x`, ...) from a caller.
pub fn network_param(n: Option<&str>) -> QResult<Option<String>> {
    match n.map(str::trim).filter(|n| !n.is_empty() && *n != "all") {
        None => Ok(None),
        Some(n)
            if n.len() <= 32
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') =>
        {
            Ok(Some(n.to_string()))
        }
        Some(n) => Err(QueryError::BadRequest(format!(
            "`network` is a network name such as mastodon or x, got `{n}`"
        ))),
    }
}

impl Queries {
    /// `type:value` typed by a person, as stored: normalised, and hashed when
    /// `[privacy]` hashes its type.
    pub fn stored_identifier(&self, identifier: &str) -> QResult<socialcrm_schemas::Identifier> {
        let (t, v) = identifier.split_once(':').ok_or_else(|| {
            QueryError::BadRequest(format!(
                "`{identifier}`: write identifiers as type:value, e.g. email:ann@example.com"
            ))
        })?;
        socialcrm_schemas::privacy::lookup_identifier(self.hasher.as_ref(), &self.normalizer, t, v)
            .map_err(|e| QueryError::BadRequest(format!("`{identifier}`: {e}")))
    }

    /// The live profile of `type:value` (following merges), or `None`.
    pub async fn lookup(&self, identifier: &str) -> QResult<Option<ProfileRow>> {
        let id = self.stored_identifier(identifier)?;
        // one round trip: identifier -> customer -> profile
        let p: Option<ProfileRow> = self
            .client
            .query(
                "SELECT ?fields FROM profiles FINAL WHERE customer_id IN \
                 (SELECT customer_id FROM identities FINAL WHERE id_type = ? AND id_value = ? AND is_active = 1)",
            )
            .bind(&id.id_type)
            .bind(&id.value)
            .fetch_optional()
            .await?;
        match p {
            Some(p) if p.is_active == 0 => self.by_customer(&p.customer_id).await,
            other => Ok(other),
        }
    }

    /// The profile of a customer id; a merged-away id leads to its survivor.
    pub async fn by_customer(&self, customer_id: &str) -> QResult<Option<ProfileRow>> {
        let mut customer = customer_id.to_string();
        // identities are rewritten on merge, but a batch may be in flight
        for _ in 0..8 {
            let p: Option<ProfileRow> = self
                .client
                .query("SELECT ?fields FROM profiles FINAL WHERE customer_id = ?")
                .bind(&customer)
                .fetch_optional()
                .await?;
            match p {
                Some(p) if p.is_active == 0 && !p.merged_into.is_empty() => {
                    customer = p.merged_into
                }
                Some(p) if p.is_active == 0 => return Ok(None),
                other => return Ok(other),
            }
        }
        Err(QueryError::Storage(format!(
            "merge chain of {customer_id} is longer than 8"
        )))
    }

    /// The profile with its newest scores (components included) and recent events.
    pub async fn profile_detail(&self, p: &ProfileRow) -> QResult<Value> {
        let run_id = run_id_of(p);
        let (scores, events) = tokio::join!(
            self.scores_of(&p.customer_id, &run_id),
            self.recent_events(p)
        );
        Ok(detail_json(p, scores?.as_ref(), &events?))
    }

    async fn scores_of(&self, customer_id: &str, run_id: &str) -> QResult<Option<ScoreRow>> {
        if run_id.is_empty() {
            return Ok(None);
        }
        Ok(self
            .client
            .query("SELECT ?fields FROM scores WHERE customer_id = ? AND run_id = ? LIMIT 1")
            .bind(customer_id)
            .bind(run_id)
            .fetch_optional()
            .await?)
    }

    /// Newest events of the profile's identifiers (each event under its primary one).
    pub async fn recent_events(&self, p: &ProfileRow) -> QResult<Vec<RecentEvent>> {
        let keys: Vec<String> = p
            .identifier_types
            .iter()
            .zip(&p.identifier_values)
            .map(|(t, v)| format!("{t}:{v}"))
            .collect();
        let sql = format!(
            "SELECT {RECENT_EVENT_COLUMNS} FROM events_by_id FINAL WHERE primary_id IN {} \
             ORDER BY occurred_at DESC, event_id DESC LIMIT ?",
            in_list(keys.len())
        );
        Ok(bind_strs(self.client.query(&sql), &keys)
            .bind(self.recent_events)
            .fetch_all()
            .await?)
    }

    /// The ledger entries that explain how a profile was put together (oldest first):
    /// entries about it, the profiles it absorbed, and its identifiers.
    pub async fn ledger(&self, p: &ProfileRow) -> QResult<Vec<LedgerRow>> {
        let mut cids: Vec<String> = vec![p.customer_id.clone()];
        cids.extend(p.merged_from.iter().cloned());
        let list = in_list(cids.len());
        let sql = format!(
            "SELECT ?fields FROM identity_ledger FINAL WHERE customer_id IN {list} OR merged_customer_id IN {list} \
             ORDER BY version, seq, entry_id"
        );
        let q = bind_strs(bind_strs(self.client.query(&sql), &cids), &cids);
        let keys: BTreeSet<String> = p
            .identifier_types
            .iter()
            .zip(&p.identifier_values)
            .map(|(t, v)| format!("{t}:{v}"))
            .collect();
        Ok(q.fetch_all::<LedgerRow>()
            .await?
            .into_iter()
            .filter(|e| {
                matches!(e.action.as_str(), "merge" | "reject" | "candidate")
                    || e.id_type.is_empty()
                    || keys.contains(&format!("{}:{}", e.id_type, e.id_value))
            })
            .collect())
    }

    /// Profiles whose name contains `q` (any case) or with an identifier starting
    /// with `q` (email prefix, handle with or without `@`). Most engaged first.
    /// Identifiers that `[privacy]` hashes are found only by their whole value: `q`
    /// is also hashed as each hashed type it is a valid value of.
    pub async fn search(
        &self,
        q: &str,
        limit: u64,
        offset: u64,
    ) -> QResult<(Vec<SegmentRow>, bool)> {
        let q = q.trim();
        if q.is_empty() || q.chars().count() > 200 {
            return Err(QueryError::BadRequest(
                "`q` is 1 to 200 characters: part of a name, an email prefix or a handle".into(),
            ));
        }
        let escaped = q
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let handle = escaped.trim_start_matches('@');
        let hashes: Vec<String> = match &self.hasher {
            Some(h) => {
                let mut v: Vec<String> = socialcrm_schemas::IdType::ALL
                    .iter()
                    .filter(|t| h.hashes_type(t.as_str()))
                    .filter_map(|t| {
                        socialcrm_schemas::privacy::lookup_identifier(
                            Some(h),
                            &self.normalizer,
                            t.as_str(),
                            q,
                        )
                        .ok()
                    })
                    .map(|id| id.value)
                    .collect();
                v.sort();
                v.dedup();
                v
            }
            None => Vec::new(),
        };
        let exact = if hashes.is_empty() {
            ""
        } else {
            " OR has(?, v)"
        };
        let sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM v_segment_profiles \
             WHERE positionCaseInsensitiveUTF8(display_name, ?) > 0 \
                OR arrayExists(v -> v LIKE ? OR v LIKE ?{exact}, identifier_values) \
             ORDER BY engagement_score DESC, customer_id LIMIT ? OFFSET ?"
        );
        let mut query = self
            .client
            .query(&sql)
            .bind(q)
            .bind(format!("{escaped}%"))
            .bind(format!("@{handle}%"));
        if !hashes.is_empty() {
            query = query.bind(&hashes);
        }
        let mut rows: Vec<SegmentRow> = query.bind(limit + 1).bind(offset).fetch_all().await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        Ok((rows, more))
    }

    /// How many live profiles match.
    pub async fn segment_count(&self, f: &SegmentFilter) -> QResult<u64> {
        let (cond, binds) = f.where_sql(Utc::now().timestamp());
        let sql = format!("SELECT count() AS n FROM v_segment_profiles WHERE {cond}");
        let c: Count = bind_all(self.client.query(&sql), &binds)
            .fetch_one()
            .await?;
        Ok(c.n)
    }

    fn segment_query(
        &self,
        f: &SegmentFilter,
        order: &str,
        limit: u64,
        offset: u64,
    ) -> clickhouse::query::Query {
        let (cond, binds) = f.where_sql(Utc::now().timestamp());
        let sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM v_segment_profiles WHERE {cond} ORDER BY {order} LIMIT ? OFFSET ?"
        );
        bind_all(self.client.query(&sql), &binds)
            .bind(limit)
            .bind(offset)
    }

    /// One page of a segment.
    pub async fn segment_rows(
        &self,
        f: &SegmentFilter,
        order: &str,
        limit: u64,
        offset: u64,
    ) -> QResult<Vec<SegmentRow>> {
        Ok(self
            .segment_query(f, order, limit, offset)
            .fetch_all()
            .await?)
    }

    /// A streaming cursor over a segment (exports of any size in constant memory).
    pub fn segment_cursor(
        &self,
        f: &SegmentFilter,
        order: &str,
        limit: u64,
    ) -> QResult<clickhouse::query::RowCursor<SegmentRow>> {
        Ok(self
            .segment_query(f, order, limit, 0)
            .fetch::<SegmentRow>()?)
    }

    async fn names(&self, ids: &[String]) -> QResult<BTreeMap<String, NameRow>> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let sql = format!(
            "SELECT customer_id, display_name, identifier_types, identifier_values FROM profiles FINAL \
             WHERE customer_id IN {}",
            in_list(ids.len())
        );
        let rows: Vec<NameRow> = bind_strs(self.client.query(&sql), ids).fetch_all().await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.customer_id.clone(), r))
            .collect())
    }

    /// Most influential customers of the newest scoring run, overall or among the
    /// customers present on one network (with that network's figures).
    pub async fn top_influencers(
        &self,
        network: Option<&str>,
        limit: u64,
        known: Option<KnownNames<'_>>,
    ) -> QResult<Value> {
        let network = network_param(network)?;
        let cond = if network.is_some() {
            "has(networks, ?)"
        } else {
            "1"
        };
        // the run's stored leaderboard (migration 0013) holds the top
        // LEADERBOARD_ROWS of each network with their breakdown: one small read
        let mut rows: Vec<InfluenceRow> = Vec::new();
        if limit <= LEADERBOARD_ROWS {
            rows = self
                .client
                .query(
                    "SELECT customer_id, influence_score, reach, amplification, pagerank, networks, \
                     network_followers, network_amplification FROM influencer_ranks \
                     WHERE run_id = (SELECT max(run_id) FROM score_runs) AND network = ? \
                     ORDER BY influence_score DESC, customer_id LIMIT ?",
                )
                .bind(network.as_deref().unwrap_or(""))
                .bind(limit)
                .fetch_all()
                .await?;
        }
        // a longer list, or a run scored before the leaderboards existed (no rows),
        // is ranked from the run's scores: two columns of the whole run, then the
        // winners' breakdown by customer id
        if rows.is_empty() {
            #[derive(Debug, Row, Deserialize)]
            struct Ranked {
                customer_id: String,
                run_id: String,
            }
            let sql = format!(
                "SELECT customer_id, run_id FROM v_scores WHERE {cond} \
                 ORDER BY influence_score DESC, customer_id LIMIT ?"
            );
            let mut q = self.client.query(&sql);
            if let Some(n) = &network {
                q = q.bind(n.as_str());
            }
            let ranked: Vec<Ranked> = q.bind(limit).fetch_all().await?;
            let ids: Vec<String> = ranked.iter().map(|r| r.customer_id.clone()).collect();
            let run_id = ranked.first().map(|r| r.run_id.clone()).unwrap_or_default();
            let sql = format!(
                "SELECT customer_id, influence_score, reach, amplification, pagerank, networks, network_followers, \
                 network_amplification FROM scores WHERE customer_id IN {} AND run_id = ?",
                in_list(ids.len())
            );
            let mut details: BTreeMap<String, InfluenceRow> =
                bind_strs(self.client.query(&sql), &ids)
                    .bind(&run_id)
                    .fetch_all::<InfluenceRow>()
                    .await?
                    .into_iter()
                    .map(|r| (r.customer_id.clone(), r))
                    .collect();
            rows = ids.iter().filter_map(|c| details.remove(c)).collect();
        }
        // names: from the caller's live profiles where it knows them (a point read
        // of `profiles` touches a granule per customer)
        let mut names: BTreeMap<String, NameRow> = BTreeMap::new();
        let mut unknown: Vec<String> = Vec::new();
        for r in &rows {
            match known.and_then(|k| k(&r.customer_id)) {
                Some(n) => {
                    names.insert(r.customer_id.clone(), n);
                }
                None => unknown.push(r.customer_id.clone()),
            }
        }
        names.extend(self.names(&unknown).await?);
        let items: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let n = names.get(&r.customer_id);
                let per_network: Map<String, Value> = r
                    .networks
                    .iter()
                    .enumerate()
                    .map(|(k, net)| {
                        (
                            net.clone(),
                            json!({
                                "followers": r.network_followers.get(k).copied().unwrap_or(0.0),
                                "amplification": r.network_amplification.get(k).copied().unwrap_or(0.0),
                            }),
                        )
                    })
                    .collect();
                json!({
                    "rank": i + 1,
                    "customer_id": r.customer_id,
                    "name": n.map(|n| n.display_name.as_str()).unwrap_or(""),
                    "handles": n.map(|n| handles(&n.identifier_types, &n.identifier_values)).unwrap_or_default(),
                    "influence_score": r.influence_score,
                    // + 0.0: no "-0" in answers
                    "reach": r.reach + 0.0,
                    "amplification": r.amplification + 0.0,
                    "pagerank": r.pagerank,
                    "networks": per_network,
                })
            })
            .collect();
        Ok(json!({ "network": network.as_deref().unwrap_or("all"), "items": items }))
    }

    /// Customers who act for the brand most: weighted advocacy actions (mentions,
    /// replies, reshares, quotes, posts, likes, follows) over all time.
    pub async fn top_advocates(&self, network: Option<&str>, limit: u64) -> QResult<Value> {
        let network = network_param(network)?;
        let types: Vec<String> = ADVOCACY_TYPES.iter().map(|t| t.to_string()).collect();
        // weights are numbers from the config, written as Float64 literals
        let weights: Vec<String> = ADVOCACY_TYPES
            .iter()
            .map(|t| {
                let w = self
                    .scoring
                    .type_weights
                    .get(*t)
                    .copied()
                    .unwrap_or(self.scoring.default_weight);
                format!("{w:?}")
            })
            .collect();
        let cond = if network.is_some() {
            "has(identifier_types, ?)"
        } else {
            "1"
        };
        let sql = format!(
            "SELECT customer_id, display_name, identifier_types, identifier_values, engagement_score, influence_score, \
             arraySum(arrayMap((t, n) -> n * transform(t, ?, [{w}], 0.), event_count_types, event_count_values)) AS advocacy, \
             toUInt64(arraySum(arrayMap((t, n) -> if(has(?, t), n, 0), event_count_types, event_count_values))) AS actions \
             FROM v_profiles WHERE {cond} AND advocacy > 0 ORDER BY advocacy DESC, customer_id LIMIT ?",
            w = weights.join(", ")
        );
        let mut q = self.client.query(&sql).bind(&types).bind(&types);
        if let Some(n) = &network {
            q = q.bind(n.as_str());
        }
        let rows: Vec<AdvocateRow> = q.bind(limit).fetch_all().await?;
        let items: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "rank": i + 1,
                    "customer_id": r.customer_id,
                    "name": r.display_name,
                    "handles": handles(&r.identifier_types, &r.identifier_values),
                    "advocacy": r.advocacy,
                    "actions": r.actions,
                    "engagement_score": r.engagement_score,
                    "influence_score": r.influence_score,
                })
            })
            .collect();
        Ok(json!({ "network": network.as_deref().unwrap_or("all"), "items": items }))
    }

    /// Touches, attributed orders and revenue per UTM campaign (first and last
    /// touch), and ROI where the config gives the campaign's cost.
    pub async fn campaign_report(&self) -> QResult<Value> {
        #[derive(Debug, Row, Deserialize)]
        struct Touch {
            campaign: String,
            touches: u64,
            customers: u64,
            sources: Vec<String>,
            mediums: Vec<String>,
        }
        #[derive(Debug, Row, Deserialize)]
        struct Attributed {
            campaign: String,
            currency: String,
            first_orders: u64,
            first_revenue: f64,
            last_orders: u64,
            last_revenue: f64,
        }
        let touches: Vec<Touch> = self
            .client
            .query(
                "SELECT campaign, count() AS touches, uniqExact(customer_id) AS customers, \
                 groupUniqArray(campaign_source) AS sources, groupUniqArray(campaign_medium) AS mediums \
                 FROM v_campaign_touches GROUP BY campaign ORDER BY campaign",
            )
            .fetch_all()
            .await?;
        let attributed: Vec<Attributed> = self
            .client
            .query(
                "SELECT campaign, revenue_currency AS currency, \
                 toUInt64(countIf(kind = 'first')) AS first_orders, sumIf(revenue_amount, kind = 'first') AS first_revenue, \
                 toUInt64(countIf(kind = 'last')) AS last_orders, sumIf(revenue_amount, kind = 'last') AS last_revenue \
                 FROM v_campaign_attribution \
                 ARRAY JOIN [first_touch, last_touch] AS campaign, ['first', 'last'] AS kind \
                 GROUP BY campaign, currency ORDER BY campaign, currency",
            )
            .fetch_all()
            .await?;
        let mut by: BTreeMap<String, Value> = BTreeMap::new();
        for t in touches {
            by.insert(
                t.campaign.clone(),
                json!({
                    "campaign": t.campaign, "touches": t.touches, "customers": t.customers,
                    "sources": t.sources.into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>(),
                    "mediums": t.mediums.into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>(),
                    "revenue": {},
                }),
            );
        }
        let mut unattributed = Map::new();
        for a in attributed {
            let figures = json!({
                "first_touch": { "orders": a.first_orders, "revenue": round2(a.first_revenue) },
                "last_touch": { "orders": a.last_orders, "revenue": round2(a.last_revenue) },
            });
            if a.campaign.is_empty() {
                unattributed.insert(a.currency, figures);
                continue;
            }
            let entry = by.entry(a.campaign.clone()).or_insert_with(|| {
                json!({"campaign": a.campaign, "touches": 0, "customers": 0, "sources": [], "mediums": [], "revenue": {}})
            });
            entry["revenue"][a.currency.as_str()] = figures;
        }
        for (name, c) in &self.campaign_costs {
            let entry = by.entry(name.clone()).or_insert_with(|| {
                json!({"campaign": name, "touches": 0, "customers": 0, "sources": [], "mediums": [], "revenue": {}})
            });
            let rev = |kind: &str| {
                entry["revenue"][c.currency.as_str()][kind]["revenue"]
                    .as_f64()
                    .unwrap_or(0.0)
            };
            let roi = |r: f64| {
                if c.cost > 0.0 {
                    Some(round2((r - c.cost) / c.cost))
                } else {
                    None
                }
            };
            let (first, last) = (rev("first_touch"), rev("last_touch"));
            entry["cost"] = json!({ "amount": c.cost, "currency": c.currency });
            entry["roi"] = json!({ "first_touch": roi(first), "last_touch": roi(last) });
        }
        Ok(json!({
            "campaigns": by.into_values().collect::<Vec<_>>(),
            "unattributed_orders": unattributed,
        }))
    }

    /// Best-selling products (by revenue per currency), and categories.
    pub async fn report_products(&self, limit: u64) -> QResult<Value> {
        #[derive(Debug, Row, Deserialize)]
        struct P {
            key: String,
            name: String,
            category: String,
            currency: String,
            orders: u64,
            units: f64,
            revenue: f64,
        }
        let run = |group: &'static str, name: &'static str, category: &'static str| {
            let sql = format!(
                "SELECT {group} AS key, {name} AS name, {category} AS category, currency, \
                 uniqExact(order_id) AS orders, sum(quantity) AS units, sum(amount) AS revenue \
                 FROM v_order_lines GROUP BY key, currency ORDER BY revenue DESC, key LIMIT ?"
            );
            let q = self.client.query(&sql).bind(limit);
            async move { q.fetch_all::<P>().await }
        };
        let (products, categories) = tokio::join!(
            run("product_id", "any(product_name)", "any(category)"),
            run("category", "''", "category")
        );
        let j = |rows: Vec<P>, product: bool| -> Vec<Value> {
            rows.into_iter()
                .map(|p| {
                    let mut v = json!({
                        "currency": p.currency, "orders": p.orders, "units": p.units, "revenue": round2(p.revenue),
                        "category": p.category,
                    });
                    if product {
                        v["product_id"] = json!(p.key);
                        v["name"] = json!(p.name);
                    }
                    v
                })
                .collect()
        };
        Ok(json!({ "products": j(products?, true), "categories": j(categories?, false) }))
    }

    /// Live customers per channel, per lifecycle stage and per RFM segment.
    pub async fn report_distributions(&self) -> QResult<Value> {
        #[derive(Debug, Row, Deserialize)]
        struct KV {
            key: String,
            customers: u64,
        }
        let run = |sql: &'static str| {
            let q = self.client.query(sql);
            async move { q.fetch_all::<KV>().await }
        };
        let (channels, lifecycle, rfm) = tokio::join!(
            run("SELECT channel AS key, count() AS customers FROM v_profiles ARRAY JOIN channels AS channel GROUP BY key ORDER BY customers DESC, key"),
            run("SELECT lifecycle_stage AS key, count() AS customers FROM v_profiles GROUP BY key ORDER BY customers DESC, key"),
            run("SELECT rfm_segment AS key, count() AS customers FROM v_profiles GROUP BY key ORDER BY customers DESC, key"),
        );
        let j = |rows: Vec<KV>| -> Vec<Value> {
            rows.into_iter()
                .map(|r| json!({"key": if r.key.is_empty() { "(none)".to_string() } else { r.key }, "customers": r.customers}))
                .collect()
        };
        Ok(json!({ "channels": j(channels?), "lifecycle": j(lifecycle?), "rfm_segments": j(rfm?) }))
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The scoring run whose scores a profile carries (`score_components.run_id`; empty
/// before one).
pub fn run_id_of(p: &ProfileRow) -> String {
    #[derive(Deserialize)]
    struct RunId {
        run_id: Option<Value>,
    }
    serde_json::from_str::<RunId>(&p.score_components)
        .ok()
        .and_then(|r| r.run_id)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// What `GET /v1/profiles/lookup` answers: the profile, the scores of its run and
/// its recent events (newest first). One function for the ClickHouse path and the
/// read model (`super::model`), so both give the same JSON.
pub fn detail_json(p: &ProfileRow, scores: Option<&ScoreRow>, events: &[RecentEvent]) -> Value {
    let mut out = profile_json(p);
    out["scores"] = match scores {
        Some(s) => score_json(s),
        None => Value::Null,
    };
    out["recent_events"] = json!(events
        .iter()
        .map(|e| {
            let mut v = json!(e);
            v["occurred_at"] = json!(time(e.occurred_at));
            v
        })
        .collect::<Vec<_>>());
    out
}

/// A score row with its components parsed.
pub fn score_json(s: &ScoreRow) -> Value {
    let mut v = json!(s);
    v["components"] = serde_json::from_str(&s.components).unwrap_or(Value::Null);
    v["scored_at"] = json!(time(s.scored_at));
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_cannot_run_formulas() {
        assert_eq!(csv_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_safe("-1+2"), "'-1+2");
        assert_eq!(csv_safe("Ann"), "Ann");
    }

    #[test]
    fn leaderboards_show_social_handles_only() {
        let t = ["email", "mastodon", "x", "shopify:s1", "anonymous_id"].map(String::from);
        let v = ["a@b.c", "@a@m.s", "12", "9", "anon"].map(String::from);
        assert_eq!(handles(&t, &v), ["mastodon:@a@m.s", "x:12"]);
    }

    #[test]
    fn network_names_are_checked() {
        assert_eq!(network_param(Some("all")).unwrap(), None);
        assert_eq!(
            network_param(Some("mastodon")).unwrap().as_deref(),
            Some("mastodon")
        );
        assert!(network_param(Some("x' OR 1")).is_err());
    }
}
