//! The GraphQL side of the Shopify connector: the queries, Shopify's query-cost
//! model, the throttle state read from `extensions.cost`, and the errors Shopify
//! reports inside HTTP 200 answers (`errors[].extensions.code`).
//!
//! Rate limiting (shopify.dev, "GraphQL Admin API rate limits"): every query has a
//! *requested* cost computed before it runs (objects cost 1, scalars and enums 0, a
//! connection multiplies its selection by `first`) and must not exceed 1000 points;
//! the app/store pair has a leaky bucket (`throttleStatus { maximumAvailable
//! currentlyAvailable restoreRate }`) that must hold the requested cost, and is
//! refunded the difference to the *actual* cost afterwards. A query that does not
//! fit is answered HTTP 200 with `errors[].extensions.code = "THROTTLED"` and no
//! data.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::runtime::http::{ApiError, ApiResponse, Inspector};

/// Largest `first` Shopify accepts on a connection.
pub const MAX_PAGE_SIZE: u32 = 250;
/// Shopify's single-query limit on the requested cost.
pub const MAX_QUERY_COST: u64 = 1000;
/// Refunds fetched with each order; an order with this many is re-read alone
/// (`OrderRefunds`), so that none is missed.
pub const REFUNDS_PER_ORDER: u32 = 10;
/// Line items per follow-up query for orders with more than `line_items_per_order`.
pub const FOLLOWUP_LINE_ITEMS: u32 = 100;

/// A connection field plus its `pageInfo`.
const CONNECTION_COST: u64 = 3;
/// Customer node: itself, `amountSpent`, `defaultEmailAddress`, `defaultPhoneNumber`,
/// `defaultAddress`.
const CUSTOMER_NODE_COST: u64 = 5;
/// Order node: itself, `customer`, `totalPriceSet` (bag, shop and presentment
/// money), five more money bags with `shopMoney`, `customerJourneySummary` with two
/// visits and their `utmParameters`.
const ORDER_NODE_COST: u64 = 1 + 1 + 3 + 5 * 2 + 5;
/// Line item node: itself, `product`, two money bags with `shopMoney`.
const LINE_ITEM_COST: u64 = 1 + 1 + 2 + 2;
/// Refund: itself and `totalRefundedSet.shopMoney`.
const REFUND_COST: u64 = 3;

/// Requested cost of a `Customers` page.
pub fn customers_query_cost(first: u32) -> u64 {
    CONNECTION_COST + u64::from(first) * CUSTOMER_NODE_COST
}

/// Requested cost of one order with `line_items` line items asked for.
fn order_node_cost(line_items: u32) -> u64 {
    ORDER_NODE_COST
        + CONNECTION_COST
        + u64::from(line_items) * LINE_ITEM_COST
        + u64::from(REFUNDS_PER_ORDER) * REFUND_COST
}

/// Requested cost of an `Orders` page.
pub fn orders_query_cost(first: u32, line_items: u32) -> u64 {
    CONNECTION_COST + u64::from(first) * order_node_cost(line_items)
}

/// Requested cost of an `OrderLineItems` follow-up.
pub fn line_items_query_cost(first: u32) -> u64 {
    1 + CONNECTION_COST + u64::from(first) * LINE_ITEM_COST
}

/// Estimated cost of an `OrderRefunds` follow-up (a plain list: Shopify sizes it
/// by what it holds; this is only used to decide whether to wait first).
pub fn refunds_query_cost() -> u64 {
    1 + 50 * REFUND_COST
}

/// Selections shared by the paged and the bulk queries (the bulk ones cannot take
/// `first` on nested connections and read every line item and refund at once).
const VISIT_SELECTION: &str =
    "occurredAt landingPage referrerUrl source utmParameters { source medium campaign content term }";
const LINE_ITEM_SELECTION: &str = "id title variantTitle sku quantity product { id productType } \
originalUnitPriceSet { shopMoney { amount currencyCode } } discountedTotalSet { shopMoney { amount currencyCode } }";
const REFUND_SELECTION: &str =
    "id createdAt note totalRefundedSet { shopMoney { amount currencyCode } }";
const CUSTOMER_SELECTION: &str = "id firstName lastName displayName createdAt updatedAt state tags locale verifiedEmail numberOfOrders \
amountSpent { amount currencyCode } \
defaultEmailAddress { emailAddress marketingState } \
defaultPhoneNumber { phoneNumber marketingState } \
defaultAddress { city provinceCode countryCodeV2 }";
/// An order's own fields (without its journey, line items and refunds).
const ORDER_SELECTION: &str =
    "id name email phone createdAt updatedAt processedAt cancelledAt test sourceName tags \
currencyCode presentmentCurrencyCode displayFinancialStatus displayFulfillmentStatus discountCodes \
customer { id } \
totalPriceSet { shopMoney { amount currencyCode } presentmentMoney { amount currencyCode } } \
subtotalPriceSet { shopMoney { amount currencyCode } } \
totalDiscountsSet { shopMoney { amount currencyCode } } \
totalTaxSet { shopMoney { amount currencyCode } } \
totalShippingPriceSet { shopMoney { amount currencyCode } } \
totalRefundedSet { shopMoney { amount currencyCode } }";

fn fragments() -> String {
    format!(
        "fragment VisitFields on CustomerVisit {{ {VISIT_SELECTION} }} \
fragment LineItemFields on LineItem {{ {LINE_ITEM_SELECTION} }} \
fragment RefundFields on Refund {{ {REFUND_SELECTION} }}"
    )
}

/// Operation names; the fake server dispatches on them as well.
pub const OP_CUSTOMERS: &str = "Customers";
pub const OP_ORDERS: &str = "Orders";
pub const OP_ORDER_LINE_ITEMS: &str = "OrderLineItems";
pub const OP_ORDER_REFUNDS: &str = "OrderRefunds";
pub const OP_BULK_RUN: &str = "BulkRun";
pub const OP_BULK_OPERATION: &str = "BulkOperation";

/// Customers updated since the filter, oldest update first.
pub fn customers_query() -> String {
    format!(
        "query Customers($first: Int!, $after: String, $query: String) {{ \
customers(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{ \
pageInfo {{ hasNextPage endCursor }} nodes {{ {CUSTOMER_SELECTION} }} }} }}"
    )
}

/// Orders updated since the filter, oldest update first, with their first line
/// items, refunds and customer journey.
pub fn orders_query() -> String {
    format!(
        "query Orders($first: Int!, $after: String, $query: String, $lineItems: Int!, $refunds: Int!) {{ \
orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{ \
pageInfo {{ hasNextPage endCursor }} \
nodes {{ {ORDER_SELECTION} \
customerJourneySummary {{ firstVisit {{ ...VisitFields }} lastVisit {{ ...VisitFields }} }} \
lineItems(first: $lineItems) {{ pageInfo {{ hasNextPage endCursor }} nodes {{ ...LineItemFields }} }} \
refunds(first: $refunds) {{ ...RefundFields }} }} }} }} {}",
        fragments()
    )
}

/// The line items of one order after a cursor.
pub fn order_line_items_query() -> String {
    format!(
        "query OrderLineItems($id: ID!, $first: Int!, $after: String) {{ order(id: $id) {{ \
lineItems(first: $first, after: $after) {{ pageInfo {{ hasNextPage endCursor }} nodes {{ ...LineItemFields }} }} }} }} {}",
        fragments()
    )
}

/// Every refund of one order.
pub fn order_refunds_query() -> String {
    format!(
        "query OrderRefunds($id: ID!) {{ order(id: $id) {{ refunds {{ ...RefundFields }} }} }} {}",
        fragments()
    )
}

/// `query: "…", ` for a connection's arguments (a JSON string is a valid GraphQL
/// string for the filters built here).
fn query_arg(filter: Option<&str>) -> String {
    match filter {
        Some(f) => format!(
            "query: {}, ",
            serde_json::to_string(f).unwrap_or_else(|_| "\"\"".into())
        ),
        None => String::new(),
    }
}

/// The bulk query of the customers stream: the same fields as [`customers_query`],
/// every customer updated since the filter, one JSONL line each.
pub fn bulk_customers_query(filter: Option<&str>) -> String {
    format!(
        "{{ customers({}sortKey: UPDATED_AT) {{ edges {{ node {{ {CUSTOMER_SELECTION} }} }} }} }}",
        query_arg(filter)
    )
}

/// The bulk query of the orders stream: the same fields as [`orders_query`], with
/// every line item (a nested connection: one JSONL line each, after its order,
/// with `__parentId`) and every refund (a list: inside the order's line).
pub fn bulk_orders_query(filter: Option<&str>) -> String {
    format!(
        "{{ orders({}sortKey: UPDATED_AT) {{ edges {{ node {{ {ORDER_SELECTION} \
customerJourneySummary {{ firstVisit {{ {VISIT_SELECTION} }} lastVisit {{ {VISIT_SELECTION} }} }} \
lineItems {{ edges {{ node {{ {LINE_ITEM_SELECTION} }} }} }} \
refunds {{ {REFUND_SELECTION} }} }} }} }} }}",
        query_arg(filter)
    )
}

/// Starts a bulk query. `groupObjects: true` keeps each order's line items right
/// after it in the result (the default is `false` since 2026-01), so that the
/// result can be read as a stream, one order at a time. Versions before 2025-07
/// have no such argument (and would refuse the mutation): they always group.
pub fn bulk_run_mutation(api_version: &str) -> String {
    let group = if has_group_objects_argument(api_version) {
        ", groupObjects: true"
    } else {
        ""
    };
    format!(
        "mutation {OP_BULK_RUN}($query: String!) {{ bulkOperationRunQuery(query: $query{group}) {{ \
bulkOperation {{ id status createdAt }} userErrors {{ field message code }} }} }}"
    )
}

/// `bulkOperationRunQuery(groupObjects:)` exists from 2025-07.
pub fn has_group_objects_argument(api_version: &str) -> bool {
    api_version >= "2025-07"
}

const BULK_OPERATION_SELECTION: &str = "id status errorCode createdAt completedAt objectCount rootObjectCount fileSize url partialDataUrl";

/// Reads one bulk operation by id: `bulkOperation(id:)` from API version 2026-01
/// on, `node(id:)` before (where `currentBulkOperation` only shows the newest).
pub fn bulk_operation_query(api_version: &str) -> String {
    if has_bulk_operation_field(api_version) {
        format!("query {OP_BULK_OPERATION}($id: ID!) {{ bulkOperation(id: $id) {{ {BULK_OPERATION_SELECTION} }} }}")
    } else {
        format!("query {OP_BULK_OPERATION}($id: ID!) {{ bulkOperation: node(id: $id) {{ ... on BulkOperation {{ {BULK_OPERATION_SELECTION} }} }} }}")
    }
}

/// `QueryRoot.bulkOperation(id:)` exists from 2026-01.
pub fn has_bulk_operation_field(api_version: &str) -> bool {
    api_version >= "2026-01"
}

/// Requested cost of `bulkOperationRunQuery` (a mutation: 10 points) and of a poll.
pub const BULK_RUN_COST: u64 = 10;
pub const BULK_POLL_COST: u64 = 1;

/// The search filter of a sync: objects updated at or after `since` (inclusive, so
/// that objects sharing the newest timestamp are never lost).
pub fn updated_since_filter(since: &chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "updated_at:>='{}'",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// `extensions.cost.throttleStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleStatus {
    pub maximum_available: f64,
    pub currently_available: f64,
    pub restore_rate: f64,
}

/// `extensions.cost`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    #[serde(default)]
    pub requested_query_cost: Option<f64>,
    #[serde(default)]
    pub actual_query_cost: Option<f64>,
    #[serde(default)]
    pub throttle_status: Option<ThrottleStatus>,
}

#[derive(Debug, Default, Deserialize)]
struct Extensions {
    #[serde(default)]
    cost: Option<Cost>,
}

/// The parts of an answer that are not `data` (parsed by the inspector of every
/// answer; `data` is skipped without being built).
#[derive(Debug, Default, Deserialize)]
struct Envelope {
    #[serde(default)]
    errors: Option<Value>,
    #[serde(default)]
    extensions: Option<Extensions>,
}

/// One entry of a GraphQL `errors` list.
#[derive(Debug, Clone, PartialEq)]
pub struct GqlError {
    pub message: String,
    /// `extensions.code` (`THROTTLED`, `ACCESS_DENIED`, `MAX_COST_EXCEEDED`, ...).
    pub code: Option<String>,
    /// `extensions.requiredAccess` of an `ACCESS_DENIED`.
    pub required_access: Option<String>,
}

/// Errors as one line: `CODE: message; message; ...` (GraphQL `errors` and
/// `userErrors` alike).
pub fn coded_messages<'a>(errors: impl Iterator<Item = (Option<&'a str>, &'a str)>) -> String {
    errors
        .map(|(code, message)| match code {
            Some(c) => format!("{c}: {message}"),
            None => message.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads an `errors` value: a list of `{message, extensions: {code}}`, or a plain
/// string as Shopify sends with some HTTP errors.
pub fn parse_errors(errors: &Value) -> Vec<GqlError> {
    match errors {
        Value::Array(list) => list
            .iter()
            .map(|e| GqlError {
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
                    .to_string(),
                code: e
                    .pointer("/extensions/code")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                required_access: e
                    .pointer("/extensions/requiredAccess")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
            .collect(),
        Value::String(s) => vec![GqlError {
            message: s.clone(),
            code: None,
            required_access: None,
        }],
        Value::Null => Vec::new(),
        other => vec![GqlError {
            message: other.to_string(),
            code: None,
            required_access: None,
        }],
    }
}

/// Is this error the throttle?
pub fn is_throttled(e: &GqlError) -> bool {
    e.code.as_deref() == Some("THROTTLED") || e.message.eq_ignore_ascii_case("throttled")
}

/// The bucket as last reported, and when.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Mutex<Option<(ThrottleStatus, Instant)>>,
}

/// Longest proactive wait (a bucket that never fills, e.g. a query costing more than
/// `maximumAvailable`, must not stall the connector: the server decides then).
const MAX_PROACTIVE_WAIT: Duration = Duration::from_secs(60);

impl Throttle {
    pub fn note(&self, s: ThrottleStatus) {
        let mut g = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *g = Some((s, Instant::now()));
    }

    pub fn last(&self) -> Option<ThrottleStatus> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(s, _)| s)
    }

    /// How long to wait before a query of `cost` points so that the bucket holds
    /// it: the last reported level plus what was restored since.
    pub fn wait_before(&self, cost: u64) -> Option<Duration> {
        let (s, at) = (*self.last.lock().unwrap_or_else(|e| e.into_inner()))?;
        if s.restore_rate.is_nan() || s.restore_rate <= 0.0 || !s.currently_available.is_finite() {
            return None;
        }
        let needed = (cost as f64).min(s.maximum_available);
        let elapsed = at.elapsed().as_secs_f64();
        let now = (s.currently_available + s.restore_rate * elapsed).min(s.maximum_available);
        if now >= needed {
            return None;
        }
        let secs = (needed - now) / s.restore_rate;
        Some(Duration::from_secs_f64(secs).min(MAX_PROACTIVE_WAIT))
    }
}

/// The wait a `THROTTLED` answer implies: the points missing for the requested
/// cost at the restore rate (at least half a second).
pub fn throttled_wait(cost: &Cost) -> Option<Duration> {
    let s = cost.throttle_status?;
    if s.restore_rate.is_nan() || s.restore_rate <= 0.0 {
        return None;
    }
    let requested = cost.requested_query_cost.unwrap_or(s.maximum_available);
    let missing = (requested.min(s.maximum_available) - s.currently_available).max(0.0);
    let secs = (missing / s.restore_rate).max(0.5);
    Some(Duration::from_secs_f64(secs.min(3600.0)))
}

/// Looks at every 2xx answer: notes the bucket level, and turns a `THROTTLED` (or
/// Shopify's `INTERNAL_SERVER_ERROR`) inside an HTTP 200 into a retryable error so
/// that [`crate::runtime::http::ApiClient::call`] waits and asks again.
pub fn inspector(source_name: String, throttle: Arc<Throttle>) -> Inspector {
    Arc::new(move |resp: &ApiResponse| {
        let env: Envelope = serde_json::from_slice(&resp.body).ok()?;
        let cost = env.extensions.and_then(|e| e.cost).unwrap_or_default();
        if let Some(s) = cost.throttle_status {
            throttle.note(s);
        }
        let errors = parse_errors(env.errors.as_ref()?);
        if errors.iter().any(is_throttled) {
            metrics::counter!("socialcrm_connector_rate_limit_waits_total",
                "connector" => source_name.clone())
            .increment(1);
            return Some(ApiError::RateLimited {
                source_name: source_name.clone(),
                status: resp.status.as_u16(),
                url: format!("{} (GraphQL THROTTLED)", resp.url),
                wait: throttled_wait(&cost),
            });
        }
        if errors
            .iter()
            .any(|e| e.code.as_deref() == Some("INTERNAL_SERVER_ERROR"))
        {
            return Some(ApiError::Server {
                source_name: source_name.clone(),
                status: resp.status.as_u16(),
                url: format!("{} (GraphQL INTERNAL_SERVER_ERROR)", resp.url),
                wait: None,
            });
        }
        None
    })
}

/// `pageInfo` of a connection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    #[serde(default)]
    pub has_next_page: bool,
    #[serde(default)]
    pub end_cursor: Option<String>,
}

/// A connection as the queries select it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    #[serde(default)]
    pub page_info: PageInfo,
    #[serde(default)]
    pub nodes: Vec<Value>,
}

/// A whole answer: `data` kept as text until the errors were looked at (with
/// errors, `data` may be `null` or hold nulls where the query expects objects).
#[derive(Debug, Deserialize)]
pub struct Answer {
    #[serde(default)]
    pub data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub errors: Option<Value>,
    #[serde(default)]
    extensions: Option<Extensions>,
}

impl Answer {
    pub fn errors(&self) -> Vec<GqlError> {
        self.errors.as_ref().map(parse_errors).unwrap_or_default()
    }
    pub fn cost(&self) -> Option<&Cost> {
        self.extensions.as_ref().and_then(|e| e.cost.as_ref())
    }
    /// `data` as `T`; `None` when it is absent or `null`.
    pub fn data<T: serde::de::DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        let raw = self.data.as_ref()?;
        if raw.get().trim() == "null" {
            return None;
        }
        Some(serde_json::from_str(raw.get()))
    }
}

/// `data` of `Customers`.
#[derive(Debug, Deserialize)]
pub struct CustomersData {
    pub customers: Connection,
}

/// `data` of `Orders`.
#[derive(Debug, Deserialize)]
pub struct OrdersData {
    pub orders: Connection,
}

/// `data` of `OrderLineItems`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineItemsData {
    pub order: Option<OrderLineItems>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineItems {
    pub line_items: Connection,
}

/// `data` of `OrderRefunds`.
#[derive(Debug, Deserialize)]
pub struct OrderRefundsData {
    pub order: Option<OrderRefunds>,
}

#[derive(Debug, Deserialize)]
pub struct OrderRefunds {
    #[serde(default)]
    pub refunds: Vec<Value>,
}

/// `data` of `BulkRun`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkRunData {
    pub bulk_operation_run_query: Option<BulkRunPayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkRunPayload {
    #[serde(default)]
    pub bulk_operation: Option<BulkOperation>,
    #[serde(default)]
    pub user_errors: Vec<UserError>,
}

/// A `userErrors` entry (`BulkOperationUserError`).
#[derive(Debug, Clone, Deserialize)]
pub struct UserError {
    #[serde(default)]
    pub field: Option<Vec<String>>,
    pub message: String,
    /// `INVALID`, `OPERATION_IN_PROGRESS`, `LIMIT_REACHED`.
    #[serde(default)]
    pub code: Option<String>,
}

/// `data` of `BulkOperation` (the field is aliased the same for `node(id:)`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkOperationData {
    pub bulk_operation: Option<BulkOperation>,
}

/// A `BulkOperation` as the connector selects it. `UnsignedInt64` fields come as
/// JSON strings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkOperation {
    #[serde(default)]
    pub id: String,
    /// `CREATED`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELING`, `CANCELED`, `EXPIRED`.
    #[serde(default)]
    pub status: String,
    /// `ACCESS_DENIED`, `INTERNAL_SERVER_ERROR`, `TIMEOUT` (failed operations).
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub object_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub root_object_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub file_size: Option<u64>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub partial_data_url: Option<String>,
}

/// An `UnsignedInt64` (a string in Shopify's JSON; a number accepted too).
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_model_matches_the_defaults() {
        assert_eq!(customers_query_cost(100), 503);
        assert!(customers_query_cost(199) <= MAX_QUERY_COST);
        assert!(customers_query_cost(200) > MAX_QUERY_COST);
        assert!(orders_query_cost(8, 10) <= MAX_QUERY_COST);
        assert!(line_items_query_cost(FOLLOWUP_LINE_ITEMS) <= MAX_QUERY_COST);
    }

    #[test]
    fn throttled_wait_is_missing_points_over_restore_rate() {
        let cost = Cost {
            requested_query_cost: Some(202.0),
            actual_query_cost: None,
            throttle_status: Some(ThrottleStatus {
                maximum_available: 1000.0,
                currently_available: 2.0,
                restore_rate: 50.0,
            }),
        };
        assert_eq!(throttled_wait(&cost), Some(Duration::from_secs(4)));
    }

    #[test]
    fn proactive_wait_counts_what_was_restored() {
        let t = Throttle::default();
        assert_eq!(t.wait_before(500), None, "nothing known yet");
        t.note(ThrottleStatus {
            maximum_available: 1000.0,
            currently_available: 100.0,
            restore_rate: 100.0,
        });
        let w = t.wait_before(500).expect("must wait");
        assert!(
            w <= Duration::from_secs(4) && w > Duration::from_millis(3900),
            "{w:?}"
        );
        assert_eq!(t.wait_before(100), None);
        // never more than the bucket can hold
        let w = t.wait_before(5000).expect("wait");
        assert!(w <= Duration::from_secs(9), "{w:?}");
    }

    #[test]
    fn group_objects_only_where_the_version_has_it() {
        assert!(bulk_run_mutation("2026-10").contains("groupObjects: true"));
        assert!(bulk_run_mutation("2025-07").contains("groupObjects: true"));
        let old = bulk_run_mutation("2025-04");
        assert!(!old.contains("groupObjects"), "{old}");
        assert!(
            old.contains("bulkOperationRunQuery(query: $query)"),
            "{old}"
        );
    }

    #[test]
    fn filter_is_inclusive_and_second_precise() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00.750+01:00")
            .expect("t")
            .with_timezone(&chrono::Utc);
        assert_eq!(
            updated_since_filter(&t),
            "updated_at:>='2026-03-01T09:00:00Z'"
        );
    }
}
