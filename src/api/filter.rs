//! Segment filters: the list generator's conditions, parsed from URL query
//! parameters (HTTP API, web page) or CLI flags, turned into one SQL `WHERE` over
//! `crm.v_segment_profiles` with bound values (never spliced user text).

use serde::Serialize;

/// A value bound to a `?` of the generated SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    F64(f64),
    U64(u64),
    Str(String),
    List(Vec<String>),
}

/// Binds `values` in order to the `?`s of `q`.
pub fn bind_all(mut q: clickhouse::query::Query, values: &[Bind]) -> clickhouse::query::Query {
    for b in values {
        q = match b {
            Bind::F64(x) => q.bind(*x),
            Bind::U64(x) => q.bind(*x),
            Bind::Str(s) => q.bind(s.as_str()),
            Bind::List(l) => q.bind(l),
        };
    }
    q
}

/// Sort orders of previews and exports.
pub const SORTS: &[(&str, &str)] = &[
    ("engagement", "engagement_score DESC, customer_id"),
    ("influence", "influence_score DESC, customer_id"),
    ("last_seen", "last_seen DESC, customer_id"),
    ("orders", "order_count DESC, customer_id"),
    ("customer_id", "customer_id"),
];

/// The conditions of a segment. Empty = every live profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SegmentFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engagement_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engagement_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub influence_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub influence_max: Option<f64>,
    /// Any of these lifecycle stages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lifecycle: Vec<String>,
    /// Any of these RFM segments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rfm_segment: Vec<String>,
    /// Used every one of these channels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Any of these product categories among the customer's top affinities.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<String>,
    /// Has an identifier of this type (a network such as `mastodon`, or `email`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_identifier: Option<String>,
    /// Last activity at most this many days ago.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_within_days: Option<u32>,
    /// No activity for at least this many days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inactive_for_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_orders: Option<u64>,
    /// Trait equals value (`trait=plan:pro`), all must hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub traits: Vec<(String, String)>,
}

/// Query parameters that are not filters but shape a listing.
pub const LISTING_PARAMS: &[&str] = &["limit", "offset", "sort"];

/// Every filter parameter, for error messages and the OpenAPI document.
pub const FILTER_PARAMS: &[&str] = &[
    "engagement_min",
    "engagement_max",
    "influence_min",
    "influence_max",
    "lifecycle",
    "rfm_segment",
    "channels",
    "category",
    "has_identifier",
    "active_within_days",
    "inactive_for_days",
    "min_orders",
    "trait",
];

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn score(key: &str, v: &str) -> Result<f64, String> {
    let x: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("`{key}` must be a number from 0 to 100, got `{v}`"))?;
    if !(0.0..=100.0).contains(&x) {
        return Err(format!("`{key}` must be from 0 to 100, got {x}"));
    }
    Ok(x)
}

fn whole<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("`{key}` must be a whole number, got `{v}`"))
}

fn token(key: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty()
        || v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "`{key}`: `{v}` is not a name (letters, digits, `_`, `-`, `.`)"
        ));
    }
    Ok(v.to_string())
}

impl SegmentFilter {
    /// Sets one parameter. `Ok(false)`: not a filter parameter.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "engagement_min" => self.engagement_min = Some(score(key, value)?),
            "engagement_max" => self.engagement_max = Some(score(key, value)?),
            "influence_min" => self.influence_min = Some(score(key, value)?),
            "influence_max" => self.influence_max = Some(score(key, value)?),
            "lifecycle" => self.lifecycle.extend(list(value)),
            "rfm_segment" => self.rfm_segment.extend(list(value)),
            "channels" => self.channels.extend(list(value)),
            "category" => self.category.extend(list(value)),
            "has_identifier" => self.has_identifier = Some(token(key, value)?),
            "active_within_days" => self.active_within_days = Some(whole(key, value)?),
            "inactive_for_days" => self.inactive_for_days = Some(whole(key, value)?),
            "min_orders" => self.min_orders = Some(whole(key, value)?),
            "trait" => {
                let (k, v) = value.split_once(':').ok_or_else(|| {
                    format!("`trait` is written name:value (e.g. plan:pro), got `{value}`")
                })?;
                self.traits.push((token("trait", k)?, v.to_string()));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Parses URL query pairs; listing parameters are returned apart, anything else
    /// is an error naming the parameter.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(SegmentFilter, Vec<(String, String)>), String> {
        let mut f = SegmentFilter::default();
        let mut rest = Vec::new();
        for (k, v) in pairs {
            if LISTING_PARAMS.contains(&k) {
                rest.push((k.to_string(), v.to_string()));
            } else if !f.set(k, v)? {
                return Err(format!(
                    "unknown parameter `{k}`; filters are {}, listings also take {}",
                    FILTER_PARAMS.join(", "),
                    LISTING_PARAMS.join(", ")
                ));
            }
        }
        Ok((f, rest))
    }

    /// The SQL condition (over `v_segment_profiles`) and its bound values; `now` in
    /// unix seconds for the day windows.
    pub fn where_sql(&self, now: i64) -> (String, Vec<Bind>) {
        let mut conds: Vec<&str> = Vec::new();
        let mut binds = Vec::new();
        let mut num = |conds: &mut Vec<&str>, c: &'static str, v: Option<f64>| {
            if let Some(v) = v {
                conds.push(c);
                binds.push(Bind::F64(v));
            }
        };
        num(&mut conds, "engagement_score >= ?", self.engagement_min);
        num(&mut conds, "engagement_score <= ?", self.engagement_max);
        num(&mut conds, "influence_score >= ?", self.influence_min);
        num(&mut conds, "influence_score <= ?", self.influence_max);
        let mut lists = |conds: &mut Vec<&str>, c: &'static str, v: &[String]| {
            if !v.is_empty() {
                conds.push(c);
                binds.push(Bind::List(v.to_vec()));
            }
        };
        lists(&mut conds, "has(?, lifecycle_stage)", &self.lifecycle);
        lists(&mut conds, "has(?, rfm_segment)", &self.rfm_segment);
        lists(&mut conds, "hasAll(channels, ?)", &self.channels);
        lists(&mut conds, "hasAny(top_categories, ?)", &self.category);
        if let Some(t) = &self.has_identifier {
            conds.push("has(identifier_types, ?)");
            binds.push(Bind::Str(t.clone()));
        }
        if let Some(d) = self.active_within_days {
            conds.push("last_seen >= toDateTime(?)");
            binds.push(Bind::U64(days_before(now, d)));
        }
        if let Some(d) = self.inactive_for_days {
            conds.push("last_seen < toDateTime(?)");
            binds.push(Bind::U64(days_before(now, d)));
        }
        if let Some(n) = self.min_orders {
            conds.push("order_count >= ?");
            binds.push(Bind::U64(n));
        }
        for (k, v) in &self.traits {
            // string traits compare as text, others (numbers, booleans) as written
            conds.push(
                "(visitParamExtractString(traits, ?) = ? OR visitParamExtractRaw(traits, ?) = ?)",
            );
            binds.extend([
                Bind::Str(k.clone()),
                Bind::Str(v.clone()),
                Bind::Str(k.clone()),
                Bind::Str(v.clone()),
            ]);
        }
        let sql = if conds.is_empty() {
            "1".to_string()
        } else {
            conds.join(" AND ")
        };
        (sql, binds)
    }
}

fn days_before(now: i64, days: u32) -> u64 {
    u64::try_from(now - i64::from(days) * 86_400).unwrap_or(0)
}

/// `ORDER BY` of a `sort` parameter.
pub fn order_by(sort: Option<&str>) -> Result<&'static str, String> {
    let key = sort.unwrap_or("engagement");
    SORTS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, sql)| *sql)
        .ok_or_else(|| {
            let keys: Vec<&str> = SORTS.iter().map(|(k, _)| *k).collect();
            format!("`sort` is one of {}, got `{key}`", keys.join(", "))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_parameter_and_rejects_unknown_ones() {
        let (f, rest) = SegmentFilter::from_pairs([
            ("engagement_min", "60"),
            ("lifecycle", "loyal, repeat"),
            ("channels", "social,shop"),
            ("trait", "plan:pro"),
            ("active_within_days", "30"),
            ("limit", "10"),
        ])
        .unwrap();
        assert_eq!(f.engagement_min, Some(60.0));
        assert_eq!(f.lifecycle, ["loyal", "repeat"]);
        assert_eq!(f.channels, ["social", "shop"]);
        assert_eq!(f.traits, [("plan".to_string(), "pro".to_string())]);
        assert_eq!(rest, [("limit".to_string(), "10".to_string())]);
        let (sql, binds) = f.where_sql(100 * 86_400);
        assert_eq!(
            sql,
            "engagement_score >= ? AND has(?, lifecycle_stage) AND hasAll(channels, ?) AND last_seen >= toDateTime(?) \
             AND (visitParamExtractString(traits, ?) = ? OR visitParamExtractRaw(traits, ?) = ?)"
        );
        assert_eq!(binds[0], Bind::F64(60.0));
        assert_eq!(binds[3], Bind::U64(70 * 86_400));
        assert_eq!(sql.matches('?').count(), binds.len());

        let err = SegmentFilter::from_pairs([("engagment_min", "1")]).unwrap_err();
        assert!(err.contains("unknown parameter `engagment_min`"), "{err}");
        let err = SegmentFilter::from_pairs([("engagement_min", "abc")]).unwrap_err();
        assert!(err.contains("`engagement_min` must be a number"), "{err}");
        let err = SegmentFilter::from_pairs([("influence_max", "250")]).unwrap_err();
        assert!(err.contains("from 0 to 100"), "{err}");
        let err = SegmentFilter::from_pairs([("trait", "x' OR 1=1 --:1")]).unwrap_err();
        assert!(err.contains("is not a name"), "{err}");
        assert_eq!(SegmentFilter::default().where_sql(0).0, "1");
    }

    #[test]
    fn sort_keys() {
        assert_eq!(
            order_by(None).unwrap(),
            "engagement_score DESC, customer_id"
        );
        assert!(order_by(Some("revenue")).unwrap_err().contains("one of"));
    }
}
