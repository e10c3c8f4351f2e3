//! Typed reading of listed orders.
//!
//! Reading each order into a slim `serde_json::Value` tree, mapping the tree and
//! dropping it was the largest part of a sync's CPU. Here an order is read into
//! the structs below, borrowing strings from the page, and its events are built by
//! the same code as the tree's ([`super::mapping::order_events_of`] and its helpers).
//!
//! The structs are stricter than the tree's reading, which takes any JSON type
//! and reads what it can: a field of an unexpected type fails the typed reading,
//! and so does anything the mapping would reject. Such an order is read as a slim
//! tree by [`super::mapping::map_order`], as before, which gives its events or its
//! rejection with the reason. Tests check that both readings give the same events.

use serde::Deserialize;
use serde_json::Value;

use super::mapping::{
    attribution_of, coupon, currency_of, line_items_of, meta_text, order_events_of, parse_wc_date,
    Billing, Ctx, LineFacts, OrderFacts, OrderHead, OrderMapped,
};

use crate::typed::{finite as num, Decimal as Num, Str as S};

/// A text field as the tree's reading takes it: trimmed, `None` when blank.
fn text<'a>(v: &'a Option<S<'_>>) -> Option<&'a str> {
    v.as_ref().map(|s| s.0.trim()).filter(|s| !s.is_empty())
}

/// A date field (`None`: absent or not a date).
fn date(v: &Option<S<'_>>) -> Option<chrono::DateTime<chrono::Utc>> {
    v.as_ref().and_then(|s| parse_wc_date(&s.0))
}

/// An id read leniently, as the tree's reading reads it from a number or a
/// string (`None`: not one).
#[derive(Debug)]
struct Id(Option<u64>);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an id")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Id, E> {
                Ok(Id(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Id, E> {
                Ok(Id(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Id, E> {
                Ok(Id(None))
            }
            fn visit_str<E>(self, v: &str) -> Result<Id, E> {
                Ok(Id(v.trim().parse().ok()))
            }
        }
        d.deserialize_any(V)
    }
}

fn id(v: &Option<Id>) -> Option<u64> {
    v.as_ref().and_then(|i| i.0)
}

/// A meta entry's value as the attribution keeps it (a text or a number; any
/// other JSON is read and left out).
#[derive(Debug)]
struct MetaValue(Option<Value>);

impl<'de> Deserialize<'de> for MetaValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(MetaValue(match Value::deserialize(d)? {
            Value::String(s) => meta_text(&s),
            Value::Number(n) => Some(Value::Number(n)),
            _ => None,
        }))
    }
}

#[derive(Debug, Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    key: Option<S<'a>>,
    value: Option<MetaValue>,
}

#[derive(Debug, Deserialize)]
struct BillingLines<'a> {
    #[serde(borrow)]
    email: Option<S<'a>>,
    #[serde(borrow)]
    phone: Option<S<'a>>,
    #[serde(borrow)]
    country: Option<S<'a>>,
    #[serde(borrow)]
    first_name: Option<S<'a>>,
    #[serde(borrow)]
    last_name: Option<S<'a>>,
    #[serde(borrow)]
    city: Option<S<'a>>,
    #[serde(borrow)]
    company: Option<S<'a>>,
}

#[derive(Debug, Deserialize)]
struct LineItem<'a> {
    product_id: Option<Id>,
    variation_id: Option<Id>,
    #[serde(borrow)]
    name: Option<S<'a>>,
    #[serde(borrow)]
    sku: Option<S<'a>>,
    quantity: Option<serde_json::Number>,
    total: Option<Num>,
}

#[derive(Debug, Deserialize)]
struct Coupon<'a> {
    #[serde(borrow)]
    code: Option<S<'a>>,
    discount: Option<Num>,
}

#[derive(Debug, Deserialize)]
struct Refund<'a> {
    id: Option<Id>,
    total: Option<Num>,
    #[serde(borrow)]
    reason: Option<S<'a>>,
}

/// A listed order, with the fields of [`super::mapping::ORDER_FIELDS`].
#[derive(Debug, Deserialize)]
struct Order<'a> {
    #[serde(borrow)]
    billing: Option<BillingLines<'a>>,
    #[serde(borrow)]
    coupon_lines: Option<Vec<Coupon<'a>>>,
    #[serde(borrow)]
    created_via: Option<S<'a>>,
    #[serde(borrow)]
    currency: Option<S<'a>>,
    customer_id: Option<Id>,
    #[serde(borrow)]
    customer_user_agent: Option<S<'a>>,
    #[serde(borrow)]
    date_completed_gmt: Option<S<'a>>,
    #[serde(borrow)]
    date_created_gmt: Option<S<'a>>,
    #[serde(borrow)]
    date_modified_gmt: Option<S<'a>>,
    #[serde(borrow)]
    date_paid_gmt: Option<S<'a>>,
    discount_total: Option<Num>,
    id: Option<Id>,
    #[serde(borrow)]
    line_items: Option<Vec<LineItem<'a>>>,
    #[serde(borrow)]
    meta_data: Option<Vec<Meta<'a>>>,
    #[serde(borrow)]
    number: Option<S<'a>>,
    parent_id: Option<Id>,
    #[serde(borrow)]
    payment_method: Option<S<'a>>,
    #[serde(borrow)]
    payment_method_title: Option<S<'a>>,
    #[serde(borrow)]
    refunds: Option<Vec<Refund<'a>>>,
    shipping_total: Option<Num>,
    #[serde(borrow)]
    status: Option<S<'a>>,
    total: Option<Num>,
    total_tax: Option<Num>,
}

/// An order's events read from its text, as [`super::mapping::map_order`] gives them
/// from its slim tree; `None` when the typed reading declines it or the mapping
/// would reject it (the caller then maps the tree, for the reason).
pub fn map_order(raw: &str, ctx: &Ctx<'_>) -> Option<OrderMapped> {
    let o: Order<'_> = serde_json::from_str(raw).ok()?;
    // a date that is present must be a date; a text anywhere else would be read
    let date_paid = o.date_paid_gmt.as_ref().map(|s| Some(s.0.as_ref()));
    let Some(head) = OrderHead::new(id(&o.id), text(&o.status), date_paid).ok()? else {
        return Some(OrderMapped::Skipped("order_not_paid"));
    };
    let customer_id = match &o.customer_id {
        None => 0,
        Some(Id(c)) => (*c)?,
    };
    let refunds = o
        .refunds
        .iter()
        .flatten()
        .map(|r| {
            Some((
                id(&r.id).filter(|i| *i > 0)?,
                num(&r.total)?,
                text(&r.reason),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    let items = o.line_items.as_deref().unwrap_or(&[]);
    let facts = OrderFacts {
        id: head.id,
        status: head.status,
        date_paid: head.date_paid,
        created: date(&o.date_created_gmt)?,
        modified: date(&o.date_modified_gmt)?,
        currency: currency_of(text(&o.currency)).ok()?,
        total: num(&o.total)?,
        customer_id,
        billing: o.billing.as_ref().map(|b| Billing {
            email: text(&b.email),
            phone: text(&b.phone),
            country: text(&b.country),
            first_name: text(&b.first_name),
            last_name: text(&b.last_name),
            city: text(&b.city),
            company: text(&b.company),
        }),
        number: text(&o.number),
        parent_id: id(&o.parent_id),
        amounts: [
            num(&o.discount_total),
            num(&o.shipping_total),
            num(&o.total_tax),
        ],
        texts: [
            text(&o.payment_method),
            text(&o.payment_method_title),
            text(&o.created_via),
        ],
        date_completed: date(&o.date_completed_gmt),
        items: line_items_of(items.iter().map(|li| LineFacts {
            product_id: id(&li.product_id),
            variation_id: id(&li.variation_id),
            name: text(&li.name),
            sku: text(&li.sku),
            quantity: li.quantity.clone(),
            total: num(&li.total),
        })),
        coupons: o
            .coupon_lines
            .iter()
            .flatten()
            .take(20)
            .filter_map(|c| coupon(text(&c.code), num(&c.discount)))
            .collect(),
        context: attribution_of(o.meta_data.iter().flatten().filter_map(|m| {
            let key = m.key.as_ref()?;
            Some((key.0.as_ref(), m.value.as_ref()?.0.clone()))
        })),
        user_agent: text(&o.customer_user_agent),
        refunds: Ok(refunds),
    };
    order_events_of(facts, ctx).ok().map(OrderMapped::Events)
}
