//! Serde helpers for types kept in the identity store, whose records are postcard
//! (binary, store format 4) and were JSON before (format 3, still read once to
//! upgrade a store). JSON, being human-readable, keeps its old shape; postcard gets
//! compact forms of what it cannot carry or would carry slowly.

/// `DateTime<Utc>`: RFC 3339 text in JSON (as chrono writes it); seconds and
/// nanoseconds in binary formats (no text formatting or parsing per record).
pub mod time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            t.serialize(s)
        } else {
            (t.timestamp(), t.timestamp_subsec_nanos()).serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        if d.is_human_readable() {
            DateTime::<Utc>::deserialize(d)
        } else {
            let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
            DateTime::from_timestamp(secs, nanos)
                .ok_or_else(|| serde::de::Error::custom(format!("time out of range: {secs}s")))
        }
    }
}

/// `serde_json::Value`: itself in JSON; its JSON text in binary formats, which
/// cannot describe a value whose shape is only known at run time.
pub mod json_value {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            v.serialize(s)
        } else {
            let text = serde_json::to_string(v).map_err(serde::ser::Error::custom)?;
            s.serialize_str(&text)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        if d.is_human_readable() {
            Value::deserialize(d)
        } else {
            let text = <&str>::deserialize(d)?;
            serde_json::from_str(text).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Serialize};
    use serde_json::{json, Value};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        #[serde(with = "super::time")]
        at: DateTime<Utc>,
        #[serde(with = "super::json_value")]
        v: Value,
    }

    #[test]
    fn json_keeps_its_shape_and_binary_round_trips() {
        let r = Rec {
            at: "2026-03-04T05:06:07.123456789Z".parse().expect("time"),
            v: json!({"a": [1, 2.5, null, "x"], "b": {"c": true}}),
        };
        let text = serde_json::to_value(&r).expect("json");
        assert_eq!(
            text,
            json!({"at": "2026-03-04T05:06:07.123456789Z", "v": {"a": [1, 2.5, null, "x"], "b": {"c": true}}})
        );
        assert_eq!(serde_json::from_value::<Rec>(text).expect("back"), r);
        let bin = postcard::to_allocvec(&r).expect("postcard");
        assert_eq!(postcard::from_bytes::<Rec>(&bin).expect("back"), r);
    }

    #[test]
    fn a_time_out_of_range_is_an_error() {
        let bin = postcard::to_allocvec(&(i64::MAX, 0u32, "1")).expect("postcard");
        assert!(postcard::from_bytes::<Rec>(&bin).is_err());
    }
}
