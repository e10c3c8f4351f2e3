//! Building blocks of the connectors' typed readings (`shopify::typed`,
//! `woocommerce::typed`, Mastodon's notifications): provider objects read into
//! structs that borrow from the page instead of JSON trees.

use serde::Deserialize;

pub use socialcrm_schemas::borrowed::Str;

/// The text of an optional string field.
pub fn opt_str<'a>(v: &'a Option<Str<'_>>) -> Option<&'a str> {
    v.as_ref().map(Str::as_str)
}

/// A decimal written as a string (`"12.30"`, trimmed) or as a number, as the
/// JSON-tree mappings read amounts; `None`: a string that is not a number.
#[derive(Debug)]
pub struct Decimal(pub Option<f64>);

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Decimal;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a decimal")
            }
            fn visit_str<E>(self, v: &str) -> Result<Decimal, E> {
                Ok(Decimal(v.trim().parse::<f64>().ok()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Decimal, E> {
                Ok(Decimal(Some(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Decimal, E> {
                Ok(Decimal(Some(v as f64)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Decimal, E> {
                Ok(Decimal(Some(v as f64)))
            }
        }
        d.deserialize_any(V)
    }
}

/// The finite value of an optional decimal field.
pub fn finite(v: &Option<Decimal>) -> Option<f64> {
    v.as_ref().and_then(|d| d.0).filter(|x| x.is_finite())
}
