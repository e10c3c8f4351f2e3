//! Building blocks of the connectors' typed readings (`shopify::typed`,
//! `woocommerce::typed`, Mastodon's notifications): provider objects read into structs that borrow from the
//! page instead of JSON trees.

use std::borrow::Cow;

use serde::Deserialize;

/// A JSON string, borrowed from the page when it has no escapes.
#[derive(Debug)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl Str<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

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
