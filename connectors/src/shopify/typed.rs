//! Typed reading of the customers and orders in a bulk result (the backfill path).
//!
//! A bulk result is one JSON object per line. Reading each line into a
//! `serde_json::Value` tree, then the tree into events, and dropping the tree was
//! most of a backfill's CPU. Here each order line and its line-item lines are read
//! into the structs below, borrowing strings from the line, and the event is built
//! by the same code as the tree's ([`mapping::order_event`] and its helpers).
//!
//! The structs are strict: a field of another type than the mapping accepts fails
//! the typed reading, and so does anything the mapping would report (a bad time,
//! an amount that is not a number, a refund it would reject). Such an order is read
//! again as a tree by [`mapping::map_order`], which gives the usual event or
//! rejection with its reason. Tests check that both readings give the same events.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::mapping::{
    self, add_line_item, customer_event, line_item_value, order_event, order_identifiers,
    refund_event, visit_facts, CustomerFacts, LineFacts, MapCtx, OrderFacts, OrderHead,
    OrderOutcome, RefundFacts, SkipReason, VisitFacts,
};
use socialcrm_schemas::CanonicalEvent;

use crate::typed::{opt_str as s, Decimal as Amount, Str as S};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Money<'a> {
    amount: Option<Amount>,
    #[serde(borrow)]
    currency_code: Option<S<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bag<'a> {
    #[serde(borrow)]
    shop_money: Option<Money<'a>>,
    #[serde(borrow)]
    presentment_money: Option<Money<'a>>,
}

#[derive(Debug, Deserialize)]
struct Ref<'a> {
    #[serde(borrow)]
    id: Option<S<'a>>,
}

#[derive(Debug, Deserialize)]
struct Utm<'a> {
    #[serde(borrow)]
    campaign: Option<S<'a>>,
    #[serde(borrow)]
    source: Option<S<'a>>,
    #[serde(borrow)]
    medium: Option<S<'a>>,
    #[serde(borrow)]
    content: Option<S<'a>>,
    #[serde(borrow)]
    term: Option<S<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Visit<'a> {
    #[serde(borrow)]
    occurred_at: Option<S<'a>>,
    #[serde(borrow)]
    landing_page: Option<S<'a>>,
    #[serde(borrow)]
    referrer_url: Option<S<'a>>,
    #[serde(borrow)]
    source: Option<S<'a>>,
    #[serde(borrow)]
    utm_parameters: Option<Utm<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Journey<'a> {
    #[serde(borrow)]
    first_visit: Option<Visit<'a>>,
    #[serde(borrow)]
    last_visit: Option<Visit<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Refund<'a> {
    #[serde(borrow)]
    id: Option<S<'a>>,
    #[serde(borrow)]
    created_at: Option<S<'a>>,
    #[serde(borrow)]
    note: Option<S<'a>>,
    #[serde(borrow)]
    total_refunded_set: Option<Bag<'a>>,
}

/// An order line of a bulk result (its line items are the lines after it).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Order<'a> {
    #[serde(borrow)]
    pub id: Option<S<'a>>,
    #[serde(borrow)]
    updated_at: Option<S<'a>>,
    #[serde(borrow)]
    created_at: Option<S<'a>>,
    #[serde(borrow)]
    processed_at: Option<S<'a>>,
    #[serde(borrow)]
    cancelled_at: Option<S<'a>>,
    test: Option<bool>,
    #[serde(borrow)]
    customer: Option<Ref<'a>>,
    #[serde(borrow)]
    email: Option<S<'a>>,
    #[serde(borrow)]
    phone: Option<S<'a>>,
    #[serde(borrow)]
    name: Option<S<'a>>,
    #[serde(borrow)]
    display_financial_status: Option<S<'a>>,
    #[serde(borrow)]
    display_fulfillment_status: Option<S<'a>>,
    #[serde(borrow)]
    source_name: Option<S<'a>>,
    #[serde(borrow)]
    tags: Option<Vec<S<'a>>>,
    #[serde(borrow)]
    discount_codes: Option<Vec<S<'a>>>,
    #[serde(borrow)]
    total_price_set: Option<Bag<'a>>,
    #[serde(borrow)]
    subtotal_price_set: Option<Bag<'a>>,
    #[serde(borrow)]
    total_discounts_set: Option<Bag<'a>>,
    #[serde(borrow)]
    total_tax_set: Option<Bag<'a>>,
    #[serde(borrow)]
    total_shipping_price_set: Option<Bag<'a>>,
    #[serde(borrow)]
    total_refunded_set: Option<Bag<'a>>,
    #[serde(borrow)]
    customer_journey_summary: Option<Journey<'a>>,
    #[serde(borrow)]
    refunds: Option<Vec<Refund<'a>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Product<'a> {
    #[serde(borrow)]
    id: Option<S<'a>>,
    #[serde(borrow)]
    product_type: Option<S<'a>>,
}

/// A line-item line of a bulk result.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LineItem<'a> {
    #[serde(borrow)]
    id: Option<S<'a>>,
    #[serde(borrow)]
    product: Option<Product<'a>>,
    #[serde(borrow)]
    title: Option<S<'a>>,
    #[serde(borrow)]
    variant_title: Option<S<'a>>,
    #[serde(borrow)]
    sku: Option<S<'a>>,
    quantity: Option<i64>,
    #[serde(borrow)]
    original_unit_price_set: Option<Bag<'a>>,
    #[serde(borrow)]
    discounted_total_set: Option<Bag<'a>>,
    /// The order it belongs to.
    #[serde(borrow, rename = "__parentId")]
    pub parent_id: Option<S<'a>>,
}

/// A time field: `Some(None)` when absent, `None` when it is not a date-time.
fn time(v: &Option<S<'_>>) -> Option<Option<DateTime<Utc>>> {
    match s(v) {
        None => Some(None),
        Some(t) => mapping::parse_time(t).map(Some),
    }
}

/// As a field of the tree's reading (the reason is not needed: an error sends the
/// order to that reading).
fn field<T>(v: Option<Option<T>>) -> mapping::Field<T> {
    v.ok_or_else(String::new)
}

/// A `MoneyV2` as the tree's `money` reads it; `None` when it would refuse it.
fn money(m: &Money<'_>) -> Option<(f64, String)> {
    let amount = crate::typed::finite(&m.amount)?;
    let currency = s(&m.currency_code).filter(|c| mapping::is_currency_code(c))?;
    Some((amount, currency.to_string()))
}

/// The shop-currency amount of a `MoneyBag` (`Some(None)`: absent).
fn shop_amount(bag: &Option<Bag<'_>>) -> Option<Option<f64>> {
    match bag.as_ref().and_then(|b| b.shop_money.as_ref()) {
        None => Some(None),
        Some(m) => money(m).map(|(a, _)| Some(a)),
    }
}

fn visit<'a>(v: &'a Visit<'_>) -> VisitFacts<'a> {
    VisitFacts {
        occurred_at: s(&v.occurred_at),
        landing_page: s(&v.landing_page),
        referrer: s(&v.referrer_url),
        source: s(&v.source),
        utm: v.utm_parameters.as_ref().map(|u| {
            [
                s(&u.campaign),
                s(&u.source),
                s(&u.medium),
                s(&u.content),
                s(&u.term),
            ]
        }),
    }
}

fn strings(v: &Option<Vec<S<'_>>>) -> Option<Vec<serde_json::Value>> {
    v.as_ref().map(|list| {
        list.iter()
            .map(|t| serde_json::Value::String(t.0.to_string()))
            .collect()
    })
}

/// The events of an order read from its lines, as [`mapping::map_order`] gives
/// them from its tree; `None` when that reading would report a problem (the
/// caller then maps the tree, for the reason).
pub(super) fn map_order(
    o: &Order<'_>,
    items: &[LineItem<'_>],
    ctx: &MapCtx<'_>,
) -> Option<OrderOutcome> {
    let mut out = OrderOutcome::default();
    let head = OrderHead::new(
        Ok(s(&o.id)),
        field(time(&o.updated_at)),
        field(time(&o.created_at)),
        field(time(&o.processed_at)),
    )
    .ok()?;
    if o.test == Some(true) && !ctx.include_test_orders {
        out.skipped = Some(SkipReason::TestOrder);
        return Some(out);
    }
    let customer_gid = o.customer.as_ref().and_then(|c| s(&c.id));
    let Some((identifiers, customer_id)) =
        order_identifiers(ctx, customer_gid, Ok(s(&o.email)), Ok(s(&o.phone))).ok()?
    else {
        out.skipped = Some(SkipReason::NoIdentifier);
        return Some(out);
    };
    let total = o.total_price_set.as_ref()?;
    let (amount, currency) = money(total.shop_money.as_ref()?)?;
    let presentment = match &total.presentment_money {
        Some(m) => Some(money(m)?),
        None => None,
    };
    let amounts = [
        shop_amount(&o.subtotal_price_set)?,
        shop_amount(&o.total_discounts_set)?,
        shop_amount(&o.total_tax_set)?,
        shop_amount(&o.total_shipping_price_set)?,
        shop_amount(&o.total_refunded_set)?,
    ];
    let (mut list, mut item_count, mut quantity) = (Vec::new(), 0, 0);
    for li in items {
        let item = line_item_value(LineFacts {
            id: s(&li.id),
            product: li.product.as_ref().map(|p| (s(&p.id), s(&p.product_type))),
            title: s(&li.title),
            variant_title: s(&li.variant_title),
            sku: s(&li.sku),
            quantity: li.quantity.map(serde_json::Number::from),
            unit_price: shop_amount(&li.original_unit_price_set)?,
            total: shop_amount(&li.discounted_total_set)?,
        });
        add_line_item(&mut list, &mut item_count, &mut quantity, item);
    }
    let journey = o.customer_journey_summary.as_ref();
    let first_visit = journey
        .and_then(|j| j.first_visit.as_ref())
        .map(|v| visit_facts(&visit(v)));
    let last_visit = journey
        .and_then(|j| j.last_visit.as_ref())
        .map(|v| visit_facts(&visit(v)));

    // the refunds first: one the tree's reading would reject sends the order there
    let name = s(&o.name);
    let mut refunds = Vec::new();
    for rf in o.refunds.iter().flatten() {
        let id = mapping::gid_number(s(&rf.id)?, "Refund")?;
        let at = time(&rf.created_at)?.unwrap_or(head.updated_at);
        let (amount, currency) = money(rf.total_refunded_set.as_ref()?.shop_money.as_ref()?)?;
        refunds.push(RefundFacts {
            id,
            at,
            amount,
            currency,
            note: s(&rf.note),
        });
    }

    let id = head.id.clone();
    out.events.push(order_event(
        OrderFacts {
            head,
            cancelled_at: time(&o.cancelled_at)?,
            test: o.test,
            customer_id,
            identifiers: identifiers.clone(),
            amount,
            currency,
            presentment,
            name,
            financial_status: s(&o.display_financial_status),
            fulfillment_status: s(&o.display_fulfillment_status),
            source_name: s(&o.source_name),
            tags: strings(&o.tags),
            discount_codes: strings(&o.discount_codes),
            amounts,
            items: list,
            item_count,
            quantity,
            first_visit,
            last_visit,
        },
        ctx,
    ));
    for f in refunds {
        out.events
            .push(refund_event(f, ctx, &id, name, &identifiers));
    }
    Some(out)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Contact<'a> {
    #[serde(borrow)]
    email_address: Option<S<'a>>,
    #[serde(borrow)]
    phone_number: Option<S<'a>>,
    #[serde(borrow)]
    marketing_state: Option<S<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Address<'a> {
    #[serde(borrow)]
    city: Option<S<'a>>,
    #[serde(borrow)]
    province_code: Option<S<'a>>,
    #[serde(borrow)]
    country_code_v2: Option<S<'a>>,
}

/// `numberOfOrders`: an `UnsignedInt64`, which travels as a string.
#[derive(Debug)]
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a count")
            }
            fn visit_str<E>(self, v: &str) -> Result<Count, E> {
                Ok(Count(v.parse().ok()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A customer line of a bulk result.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Customer<'a> {
    #[serde(borrow)]
    id: Option<S<'a>>,
    #[serde(borrow)]
    updated_at: Option<S<'a>>,
    #[serde(borrow)]
    created_at: Option<S<'a>>,
    #[serde(borrow)]
    default_email_address: Option<Contact<'a>>,
    #[serde(borrow)]
    default_phone_number: Option<Contact<'a>>,
    #[serde(borrow)]
    first_name: Option<S<'a>>,
    #[serde(borrow)]
    last_name: Option<S<'a>>,
    #[serde(borrow)]
    tags: Option<Vec<S<'a>>>,
    number_of_orders: Option<Count>,
    #[serde(borrow)]
    amount_spent: Option<Money<'a>>,
    #[serde(borrow)]
    state: Option<S<'a>>,
    verified_email: Option<bool>,
    #[serde(borrow)]
    locale: Option<S<'a>>,
    #[serde(borrow)]
    default_address: Option<Address<'a>>,
}

/// The `identify` of a customer read from its line, as [`mapping::map_customer`]
/// gives it from its tree; `None` when that reading would reject it.
pub(super) fn map_customer(c: &Customer<'_>, ctx: &MapCtx<'_>) -> Option<CanonicalEvent> {
    // a number a string could not hold would be refused by the tree's reading
    let orders_count = match &c.number_of_orders {
        None => None,
        Some(Count(n)) => Some(serde_json::Number::from((*n)?)),
    };
    let amount_spent = match &c.amount_spent {
        None => None,
        Some(m) => Some(money(m)?),
    };
    Some(customer_event(
        CustomerFacts {
            id: mapping::gid_number(s(&c.id)?, "Customer")?,
            updated_at: time(&c.updated_at)??,
            created_at: time(&c.created_at)?,
            email: c
                .default_email_address
                .as_ref()
                .map(|e| (s(&e.email_address), s(&e.marketing_state))),
            phone: c
                .default_phone_number
                .as_ref()
                .map(|p| (s(&p.phone_number), s(&p.marketing_state))),
            first_name: s(&c.first_name),
            last_name: s(&c.last_name),
            tags: strings(&c.tags),
            orders_count,
            amount_spent,
            state: s(&c.state),
            verified_email: c.verified_email,
            locale: s(&c.locale),
            address: c
                .default_address
                .as_ref()
                .map(|a| [s(&a.city), s(&a.province_code), s(&a.country_code_v2)]),
        },
        ctx,
    ))
}

/// An order line of a bulk result that has no line-item lines, mapped as the bulk
/// walk maps it when the typed reading takes it (`None`: declined). For the fuzz
/// target, which checks it against the tree's reading.
pub fn map_order_line(line: &str, ctx: &MapCtx<'_>) -> Option<OrderOutcome> {
    let o: Order<'_> = serde_json::from_str(line).ok()?;
    map_order(&o, &[], ctx)
}

/// A customer line of a bulk result, mapped as the bulk walk maps it when the
/// typed reading takes it (`None`: declined). For the fuzz target.
pub fn map_customer_line(line: &str, ctx: &MapCtx<'_>) -> Option<CanonicalEvent> {
    let c: Customer<'_> = serde_json::from_str(line).ok()?;
    map_customer(&c, ctx)
}
