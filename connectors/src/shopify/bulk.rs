//! Large reads through Shopify bulk operations (shopify.dev, "Perform bulk
//! operations with the GraphQL Admin API").
//!
//! A bulk walk starts one `bulkOperationRunQuery` with the stream's query (every
//! object updated since the watermark, all line items and refunds of each order),
//! stores the operation's id in the cursor (an empty page), polls the operation
//! until it is `COMPLETED`, then streams the JSONL result from its `url`: one line
//! per customer or order, each order followed by one line per line item that
//! carries `__parentId` (the operation runs with `groupObjects: true`, so children
//! come right after their parent). Lines are cut into runtime pages of
//! `bulk_page_size` objects on the fetch chain (a newline search, a look for the
//! `__parentId` key and the root's `updatedAt`); parsing, reassembly and mapping
//! are left to the page's deferred mapping.
//!
//! The cursor keeps the operation's id, the bytes and lines of the result already
//! emitted and the operation's `createdAt`. A restart polls the operation again
//! (its result URL is never stored: it is a signed link, valid about a week) and
//! resumes with a `Range` request at the stored byte offset. When the whole result
//! is emitted, the watermark moves to the newest `updatedAt` seen, capped at the
//! operation's `createdAt` (what changed while it ran is read again by the next
//! walk), minus `overlap_secs`.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::client::{self, BulkOperation};
use super::config::BulkMode;
use super::mapping;
use super::typed;
use super::{Source, StreamCursor, CUSTOMERS};
use crate::runtime::http::{ApiError, Request};
use crate::runtime::{Deferred, DeferredOutput, Page, Rejected, SourceError};

/// First wait between polls of a running operation; doubled up to
/// [`POLL_MAX`]. A poll costs one query point.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(10);

/// The bulk operation a stream's walk reads (part of [`StreamCursor`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkCursor {
    /// The operation's id (`gid://shopify/BulkOperation/…`).
    pub id: String,
    /// Bytes of its JSONL result already emitted: every object in them was
    /// acknowledged by Kafka before this cursor was stored.
    #[serde(default)]
    pub offset: u64,
    /// Lines in those bytes (for logs and checks).
    #[serde(default)]
    pub lines: u64,
    /// The operation's `createdAt` (caps the next watermark).
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

/// What polling found.
enum Polled {
    /// `COMPLETED`: the result is at `url` (none when it is empty).
    Completed(BulkOperation),
    /// Unknown to Shopify, or its result expired: start a new one.
    Gone(String),
    /// `FAILED` (other than access) or `CANCELED`: read this walk paged.
    Failed(String),
}

/// One object of the result: its line and the lines of its children.
#[derive(Debug, Clone)]
struct Group {
    /// 1-based line number of `root` in the result.
    line: u64,
    /// Byte range of the object's line in the page's bytes (`None`: children
    /// with no parent before them).
    root: Option<(usize, usize)>,
    children: Vec<(u64, usize, usize)>,
}

/// An open download of one operation's result, positioned after what was emitted.
pub(super) struct Reader {
    op_id: String,
    resp: reqwest::Response,
    /// Unconsumed bytes; `buf[0]` is at `offset` in the file.
    buf: Vec<u8>,
    offset: u64,
    lines: u64,
    /// Bytes still to drop before `offset` (a server that ignored `Range`).
    skip: u64,
    eof: bool,
    result: ResultInfo,
}

/// What polling said about a completed operation's result.
#[derive(Clone)]
struct ResultInfo {
    /// The signed link (kept in memory only: it grants access to the data).
    url: String,
    file_size: Option<u64>,
    root_total: Option<u64>,
    created_at: Option<DateTime<Utc>>,
}

/// One page of the result, cut on the fetch chain.
struct RawPage {
    bytes: Bytes,
    groups: Vec<Group>,
    /// Newest `updatedAt` of the page's objects.
    max_updated_at: Option<DateTime<Utc>>,
    /// The whole result was read.
    done: bool,
}

/// Finds `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// The text after a top-level-looking `"key":` (optional spaces) when it is a
/// string: `"updatedAt":"2026-01-05T00:00:00Z"`. Inside JSON strings quotes are
/// escaped, so `"key"` followed by `:` is always a key.
fn key_pos(line: &[u8], quoted_key: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = find(&line[from..], quoted_key) {
        let mut j = from + i + quoted_key.len();
        while line.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        if line.get(j) == Some(&b':') {
            j += 1;
            while line.get(j).is_some_and(u8::is_ascii_whitespace) {
                j += 1;
            }
            return Some(j);
        }
        from += i + 1;
    }
    None
}

fn string_value<'a>(line: &'a [u8], quoted_key: &[u8]) -> Option<&'a str> {
    let j = key_pos(line, quoted_key)?;
    let rest = line.get(j..)?.strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', rest)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// A line that carries `__parentId` is a child (a line item of the order above).
fn is_child(line: &[u8]) -> bool {
    key_pos(line, b"\"__parentId\"").is_some()
}

impl Reader {
    /// Cuts the next page: up to `max` objects, each with its children. The page
    /// ends before the next object's line, so a stored cursor never splits one.
    async fn next_page(&mut self, max: usize, source_name: &str) -> Result<RawPage, ApiError> {
        let mut groups: Vec<Group> = Vec::new();
        let mut max_updated_at = None;
        let mut pos = 0usize; // scanned up to here (a line start)
        let mut line_no = self.lines;
        let end = loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.buf[pos..]) {
                let line = &self.buf[pos..pos + nl];
                let next = pos + nl + 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    pos = next;
                    line_no += 1;
                    continue;
                }
                if is_child(line) {
                    line_no += 1;
                    let child = (line_no, pos, pos + nl);
                    match groups.last_mut() {
                        Some(g) => g.children.push(child),
                        None => groups.push(Group {
                            line: line_no,
                            root: None,
                            children: vec![child],
                        }),
                    }
                } else {
                    if groups.len() >= max {
                        break pos;
                    }
                    line_no += 1;
                    let t = string_value(line, b"\"updatedAt\"").and_then(mapping::parse_time);
                    max_updated_at = max_updated_at.max(t);
                    groups.push(Group {
                        line: line_no,
                        root: Some((pos, pos + nl)),
                        children: Vec::new(),
                    });
                }
                pos = next;
                continue;
            }
            if self.eof {
                // a last line without a newline
                let rest = &self.buf[pos..];
                if !rest.iter().all(u8::is_ascii_whitespace) {
                    let (a, b) = (pos, self.buf.len());
                    line_no += 1;
                    if is_child(rest) {
                        match groups.last_mut() {
                            Some(g) => g.children.push((line_no, a, b)),
                            None => groups.push(Group {
                                line: line_no,
                                root: None,
                                children: vec![(line_no, a, b)],
                            }),
                        }
                    } else {
                        let t = string_value(rest, b"\"updatedAt\"").and_then(mapping::parse_time);
                        max_updated_at = max_updated_at.max(t);
                        groups.push(Group {
                            line: line_no,
                            root: Some((a, b)),
                            children: Vec::new(),
                        });
                    }
                }
                break self.buf.len();
            }
            self.fill(source_name).await?;
        };
        let done = self.eof && end == self.buf.len();
        if done {
            if let Some(size) = self.result.file_size {
                let read = self.offset + end as u64;
                if read != size {
                    return Err(ApiError::Network {
                        source_name: source_name.to_string(),
                        url: format!("bulk operation {} result", self.op_id),
                        message: format!(
                            "the download ended after {read} of {size} bytes (truncated); it is read again from the last stored position"
                        ),
                    });
                }
            }
        }
        let bytes = Bytes::copy_from_slice(&self.buf[..end]);
        self.buf.drain(..end);
        self.offset += end as u64;
        self.lines = line_no;
        Ok(RawPage {
            bytes,
            groups,
            max_updated_at,
            done,
        })
    }

    /// Reads the next chunk of the download into `buf` (or notes its end).
    async fn fill(&mut self, source_name: &str) -> Result<(), ApiError> {
        match self.resp.chunk().await {
            Ok(Some(mut chunk)) => {
                if self.skip > 0 {
                    let n = (self.skip as usize).min(chunk.len());
                    self.skip -= n as u64;
                    chunk = chunk.slice(n..);
                }
                self.buf.extend_from_slice(&chunk);
                Ok(())
            }
            Ok(None) => {
                if self.skip > 0 {
                    return Err(ApiError::Network {
                        source_name: source_name.to_string(),
                        url: format!("bulk operation {} result", self.op_id),
                        message: "the download ended before the stored position".into(),
                    });
                }
                self.eof = true;
                Ok(())
            }
            Err(e) => Err(ApiError::Network {
                source_name: source_name.to_string(),
                url: format!("bulk operation {} result", self.op_id),
                // without the URL: its query is the link's signature
                message: format!("reading the download: {}", e.without_url()),
            }),
        }
    }
}

/// The line's `id`, for reports of lines that are not JSON.
fn guess_id(line: &[u8]) -> Option<String> {
    string_value(line, b"\"id\"").map(str::to_string)
}

fn rejected_line(op: &str, line_no: u64, raw: &[u8], why: String) -> Rejected {
    Rejected {
        object_id: guess_id(raw).unwrap_or_else(|| format!("{op}#line{line_no}")),
        reason: format!("line {line_no} of bulk operation {op}'s result {why}; skipped"),
        raw: raw.to_vec(),
    }
}

/// An object of a page, as [`assemble`] read it.
enum Node<'a> {
    /// A customer or an order that did not read as typed lines.
    Tree(Value),
    /// A customer read from its line without a tree ([`typed`]).
    Customer {
        customer: Box<typed::Customer<'a>>,
        group: usize,
    },
    /// An order read from its lines without a tree ([`typed`]); `group` is its
    /// place in the page, to read it again as a tree if the typed mapping declines.
    Order {
        order: Box<typed::Order<'a>>,
        items: Vec<typed::LineItem<'a>>,
        group: usize,
    },
}

/// Rebuilds the objects of a page: customers as they are, orders with their line
/// items under `lineItems.nodes` (the shape of the paged query), or as typed lines
/// when each of an order's lines reads as such. Lines that are not JSON, or
/// children without their parent, are rejected with their id.
fn assemble<'a>(
    op: &str,
    stream: &str,
    bytes: &'a [u8],
    groups: &[Group],
) -> (Vec<Node<'a>>, Vec<Rejected>) {
    let mut nodes = Vec::with_capacity(groups.len());
    let mut rejected = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        if stream == CUSTOMERS {
            if let Some(customer) = typed_customer(bytes, g) {
                nodes.push(Node::Customer {
                    customer: Box::new(customer),
                    group: i,
                });
                continue;
            }
        } else {
            if let Some((order, items)) = typed_order(bytes, g) {
                nodes.push(Node::Order {
                    order: Box::new(order),
                    items,
                    group: i,
                });
                continue;
            }
        }
        if let Some(node) = tree(op, stream, bytes, g, &mut rejected) {
            nodes.push(Node::Tree(node));
        }
    }
    (nodes, rejected)
}

/// A customer as a typed line: `None` unless it reads as one and has no children.
fn typed_customer<'a>(bytes: &'a [u8], g: &Group) -> Option<typed::Customer<'a>> {
    let (a, b) = g.root?;
    if !g.children.is_empty() {
        return None;
    }
    serde_json::from_slice(&bytes[a..b]).ok()
}

/// An order and its line items as typed lines: `None` unless every line reads and
/// every line item names the order as its parent.
fn typed_order<'a>(
    bytes: &'a [u8],
    g: &Group,
) -> Option<(typed::Order<'a>, Vec<typed::LineItem<'a>>)> {
    let (a, b) = g.root?;
    let order: typed::Order<'a> = serde_json::from_slice(&bytes[a..b]).ok()?;
    let parent = order.id.as_ref()?;
    let mut items = Vec::with_capacity(g.children.len());
    for (_, a, b) in &g.children {
        let item: typed::LineItem<'a> = serde_json::from_slice(&bytes[*a..*b]).ok()?;
        if item.parent_id.as_ref().map(|p| p.as_str()) != Some(parent.as_str()) {
            return None;
        }
        items.push(item);
    }
    Some((order, items))
}

/// One object of a page as a tree (see [`assemble`]); what cannot be read is added
/// to `rejected`.
fn tree(
    op: &str,
    stream: &str,
    bytes: &[u8],
    g: &Group,
    rejected: &mut Vec<Rejected>,
) -> Option<Value> {
    let Some((a, b)) = g.root else {
        for (n, a, b) in &g.children {
            rejected.push(rejected_line(
                op,
                *n,
                &bytes[*a..*b],
                "has a `__parentId` but no object before it".into(),
            ));
        }
        return None;
    };
    let raw = &bytes[a..b];
    let mut node: Value = match serde_json::from_slice(raw) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            rejected.push(rejected_line(
                op,
                g.line,
                raw,
                "is not a JSON object".into(),
            ));
            return None;
        }
        Err(e) => {
            let why = if g.children.is_empty() {
                format!("is not JSON ({e})")
            } else {
                format!(
                    "is not JSON ({e}); its {} line items are skipped with it",
                    g.children.len()
                )
            };
            rejected.push(rejected_line(op, g.line, raw, why));
            return None;
        }
    };
    if stream == CUSTOMERS && g.children.is_empty() {
        return Some(node);
    }
    let parent = node
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut items = Vec::with_capacity(g.children.len());
    let mut bad_child = None;
    for (n, a, b) in &g.children {
        let craw = &bytes[*a..*b];
        match serde_json::from_slice::<Value>(craw) {
            Ok(Value::Object(mut m)) => {
                let of = m.remove("__parentId");
                if of.as_ref().and_then(Value::as_str) != Some(parent.as_str()) {
                    rejected.push(rejected_line(
                        op,
                        *n,
                        craw,
                        format!(
                            "belongs to {} but follows {parent} (the result is not grouped)",
                            of.unwrap_or(Value::Null)
                        ),
                    ));
                    continue;
                }
                items.push(Value::Object(m));
            }
            Ok(_) => bad_child = Some((*n, "is not a JSON object".to_string())),
            Err(e) => bad_child = Some((*n, format!("is not JSON ({e})"))),
        }
    }
    if let Some((n, why)) = bad_child {
        // an order without one of its line items would carry wrong totals
        rejected.push(Rejected {
            object_id: if parent.is_empty() { format!("{op}#line{}", g.line) } else { parent },
            reason: format!(
                "line {n} of bulk operation {op}'s result (a line item of this order) {why}; the order is skipped"
            ),
            raw: raw.to_vec(),
        });
        return None;
    }
    if stream == CUSTOMERS {
        // customers have no nested connection: a child line is unexpected
        return Some(node);
    }
    if let Some(obj) = node.as_object_mut() {
        obj.insert("lineItems".into(), json!({ "nodes": items }));
    }
    Some(node)
}

fn parse_ts(s: Option<&str>) -> Option<DateTime<Utc>> {
    s.and_then(mapping::parse_time)
}

impl Source {
    /// Whether the walk that starts at `c` reads through a bulk operation.
    pub(super) fn wants_bulk(&self, stream: &str, c: &StreamCursor) -> bool {
        if c.after.is_some() || self.paged_fallback.contains(stream) {
            return false;
        }
        match self.cfg.bulk {
            BulkMode::Never => false,
            BulkMode::Always => true,
            BulkMode::Auto => match c.synced_at {
                None => true,
                Some(t) => {
                    let threshold = self.cfg.bulk_threshold_secs.min(i64::MAX as u64) as i64;
                    (Utc::now() - t).num_seconds() > threshold
                }
            },
        }
    }

    /// Reads this walk with paged queries (says why).
    async fn fall_back(
        &mut self,
        stream: &str,
        c: StreamCursor,
        why: &str,
    ) -> Result<Page, SourceError> {
        tracing::warn!(connector = %self.instance, stream, reason = why,
            "bulk operation not usable; this walk is read with paged queries");
        self.paged_fallback.insert(stream.to_string());
        let c = StreamCursor {
            bulk: None,
            after: None,
            ..c
        };
        self.fetch_paged(stream, c).await
    }

    /// Starts the walk's bulk operation; the page is empty and carries its id.
    pub(super) async fn start_bulk(
        &mut self,
        stream: &str,
        c: StreamCursor,
    ) -> Result<Page, SourceError> {
        let filter = c.updated_at_min.map(|t| client::updated_since_filter(&t));
        let query = if stream == CUSTOMERS {
            client::bulk_customers_query(filter.as_deref())
        } else {
            client::bulk_orders_query(filter.as_deref())
        };
        let answer: Result<client::BulkRunData, SourceError> = self
            .query(
                stream,
                client::OP_BULK_RUN,
                &self.queries.bulk_run,
                json!({ "query": query }),
                client::BULK_RUN_COST,
            )
            .await;
        let auto = self.cfg.bulk == BulkMode::Auto;
        let payload = match answer {
            // a GraphQL ACCESS_DENIED on the mutation: the token may not be allowed
            // bulk operations; the paged queries say precisely what is missing
            Err(SourceError::Api(ApiError::Auth {
                status: 200, fix, ..
            })) if auto => {
                return self.fall_back(stream, c, &fix).await;
            }
            Err(e) => return Err(e),
            Ok(d) => d.bulk_operation_run_query,
        };
        let Some(payload) = payload else {
            return Err(self.payload("bulkOperationRunQuery: the answer has no payload".into()));
        };
        if !payload.user_errors.is_empty() {
            let text = client::coded_messages(
                payload
                    .user_errors
                    .iter()
                    .map(|e| (e.code.as_deref(), e.message.as_str())),
            );
            let busy = payload.user_errors.iter().any(|e| {
                matches!(
                    e.code.as_deref(),
                    Some("OPERATION_IN_PROGRESS" | "LIMIT_REACHED")
                )
            });
            if auto {
                return self
                    .fall_back(stream, c, &format!("bulkOperationRunQuery refused: {text}"))
                    .await;
            }
            let hint = if busy {
                " (another bulk query of this app runs on the store: it is tried again at the next poll)"
            } else {
                ""
            };
            return Err(self.payload(format!("bulkOperationRunQuery refused: {text}{hint}")));
        }
        let Some(op) = payload.bulk_operation.filter(|op| !op.id.is_empty()) else {
            return Err(self.payload(
                "bulkOperationRunQuery: neither a bulk operation nor userErrors in the answer"
                    .into(),
            ));
        };
        tracing::info!(connector = %self.instance, stream, operation = %op.id,
            since = ?c.updated_at_min, "bulk operation started");
        metrics::counter!("socialcrm_connector_bulk_operations_total",
            "connector" => self.instance.clone(), "stream" => stream.to_string())
        .increment(1);
        let next = StreamCursor {
            after: None,
            max_updated_at: None,
            bulk: Some(BulkCursor {
                id: op.id,
                offset: 0,
                lines: 0,
                created_at: parse_ts(op.created_at.as_deref()),
            }),
            ..c
        };
        Ok(Page {
            cursor: next.to_value(),
            ..Page::default()
        })
    }

    /// Polls the operation until it ends.
    async fn poll(&self, stream: &str, id: &str) -> Result<Polled, SourceError> {
        let mut wait = POLL_FIRST;
        let mut polls = 0u64;
        loop {
            let data: client::BulkOperationData = self
                .query(
                    stream,
                    client::OP_BULK_OPERATION,
                    &self.queries.bulk_operation,
                    json!({ "id": id }),
                    client::BULK_POLL_COST,
                )
                .await?;
            polls += 1;
            let Some(op) = data.bulk_operation.filter(|op| !op.status.is_empty()) else {
                return Ok(Polled::Gone(format!(
                    "Shopify does not know bulk operation {id}"
                )));
            };
            match op.status.as_str() {
                "COMPLETED" => {
                    tracing::info!(connector = %self.instance, stream, operation = id, polls,
                        objects = ?op.object_count, bytes = ?op.file_size, "bulk operation completed");
                    return Ok(Polled::Completed(op));
                }
                "CREATED" | "RUNNING" | "CANCELING" => {
                    if polls.is_multiple_of(20) {
                        tracing::info!(connector = %self.instance, stream, operation = id,
                            status = %op.status, objects = ?op.object_count, "bulk operation running");
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(POLL_MAX);
                }
                "EXPIRED" => {
                    return Ok(Polled::Gone(format!(
                        "the result of bulk operation {id} expired (Shopify keeps it about a week)"
                    )))
                }
                status => {
                    let code = op.error_code.clone().unwrap_or_default();
                    if code == "ACCESS_DENIED" {
                        let scope = if stream == CUSTOMERS {
                            "read_customers"
                        } else {
                            "read_orders"
                        };
                        return Err(SourceError::Api(ApiError::Auth {
                            source_name: self.instance.clone(),
                            status: 200,
                            url: format!("{} (bulk operation {id}: ACCESS_DENIED)", self.endpoint),
                            fix: format!(
                                "Shopify denied the bulk query access to some fields: the app's token lacks the `{scope}` scope (or access to protected customer data): grant read_customers and read_orders to the app, install the new version on {}, and set connectors.{}.access_token to the token it issues",
                                self.cfg.shop, self.instance
                            ),
                        }));
                    }
                    let partial = if op.partial_data_url.is_some() {
                        " (its partial result is not used)"
                    } else {
                        ""
                    };
                    return Ok(Polled::Failed(format!(
                        "bulk operation {id} ended {status}{}{partial}",
                        if code.is_empty() {
                            String::new()
                        } else {
                            format!(" with {code}")
                        }
                    )));
                }
            }
        }
    }

    /// Opens the result at the cursor's position.
    async fn open(&self, result: ResultInfo, b: &BulkCursor) -> Result<Reader, ApiError> {
        let mut req = Request::default();
        if b.offset > 0 {
            req.headers
                .push(("Range".into(), format!("bytes={}-", b.offset)));
        }
        // the result URL is a signed link to Shopify's storage: no access token
        let resp = self.download.open(&result.url, &req).await?;
        let partial = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        Ok(Reader {
            op_id: b.id.clone(),
            resp,
            buf: Vec::with_capacity(1 << 20),
            offset: b.offset,
            lines: b.lines,
            skip: if partial { 0 } else { b.offset },
            eof: false,
            result,
        })
    }

    /// The next page of a bulk walk (polling and opening the result first when
    /// this process has no download open at the cursor's position).
    pub(super) async fn fetch_bulk(
        &mut self,
        stream: &str,
        c: StreamCursor,
        b: BulkCursor,
    ) -> Result<Page, SourceError> {
        let positioned = self
            .readers
            .get(stream)
            .is_some_and(|r| r.op_id == b.id && r.offset == b.offset);
        if !positioned {
            self.readers.remove(stream);
            let op = match self.poll(stream, &b.id).await? {
                Polled::Completed(op) => op,
                Polled::Gone(why) => {
                    tracing::warn!(connector = %self.instance, stream, reason = %why,
                        emitted_lines = b.lines, "bulk operation gone; a new one reads the walk again from the watermark (replays keep their event ids)");
                    let c = StreamCursor {
                        bulk: None,
                        max_updated_at: None,
                        ..c
                    };
                    return self.start_bulk(stream, c).await;
                }
                Polled::Failed(why) => return self.fall_back(stream, c, &why).await,
            };
            let Some(url) = op.url.clone() else {
                if op.object_count.unwrap_or(0) == 0 {
                    // nothing updated since the watermark: Shopify gives no file
                    return Ok(self.finish_walk(&c, &b, op.created_at.as_deref()));
                }
                return self
                    .fall_back(
                        stream,
                        c,
                        &format!("bulk operation {} completed without a result URL", b.id),
                    )
                    .await;
            };
            let result = ResultInfo {
                url,
                file_size: op.file_size,
                root_total: op.root_object_count,
                created_at: b.created_at.or(parse_ts(op.created_at.as_deref())),
            };
            let reader = match self.open(result, &b).await {
                Ok(r) => r,
                // a refused link (expired, or a proxy in the way): paged works
                Err(e @ (ApiError::Auth { .. } | ApiError::Client { .. })) => {
                    let why = format!(
                        "the result of bulk operation {} cannot be downloaded: {e}",
                        b.id
                    );
                    return self.fall_back(stream, c, &why).await;
                }
                Err(e) => return Err(e.into()),
            };
            if b.offset > 0 {
                tracing::info!(connector = %self.instance, stream, operation = %b.id,
                    offset = b.offset, lines = b.lines, "resuming a bulk operation's result");
            }
            self.readers.insert(stream.to_string(), reader);
        }
        let max = self.cfg.bulk_page_size as usize;
        let mut reopened = false;
        let (raw, reader) = loop {
            let Some(mut reader) = self.readers.remove(stream) else {
                return Err(self.payload("bulk result reader missing".into()));
            };
            match reader.next_page(max, &self.instance).await {
                Ok(raw) => break (raw, reader),
                // a download that broke off (or came short) is opened again once
                // at the page's start; after that, the fetch fails and the runtime
                // asks again from the stored cursor
                Err(e) if !reopened => {
                    reopened = true;
                    tracing::warn!(connector = %self.instance, stream, operation = %b.id,
                        offset = b.offset, error = %e, "bulk result download broke off; reading it again from the page's start");
                    let fresh = self.open(reader.result.clone(), &b).await?;
                    self.readers.insert(stream.to_string(), fresh);
                }
                Err(e) => return Err(e.into()),
            }
        };
        let (offset, lines, total, created_at) = (
            reader.offset,
            reader.lines,
            reader.result.root_total,
            reader.result.created_at,
        );
        if !raw.done {
            self.readers.insert(stream.to_string(), reader);
        }
        let objects = raw.groups.iter().filter(|g| g.root.is_some()).count() as u64;
        let max_seen = c.max_updated_at.max(raw.max_updated_at);
        let mut page = if raw.done {
            let walked = StreamCursor {
                max_updated_at: max_seen,
                ..c.clone()
            };
            let b = BulkCursor {
                created_at,
                ..b.clone()
            };
            self.finish_walk(&walked, &b, None)
        } else {
            let next = StreamCursor {
                max_updated_at: max_seen,
                bulk: Some(BulkCursor {
                    id: b.id.clone(),
                    offset,
                    lines,
                    created_at,
                }),
                ..c.clone()
            };
            Page {
                cursor: next.to_value(),
                position: max_seen,
                ..Page::default()
            }
        };
        page.objects = objects;
        page.total = total;
        page.position = max_seen;
        page.deferred = Some(self.bulk_mapping(stream, &b.id, raw));
        Ok(page)
    }

    /// The page that ends a bulk walk: the watermark moves to the newest
    /// `updatedAt` seen, at most the operation's `createdAt`, minus the overlap.
    fn finish_walk(&self, c: &StreamCursor, b: &BulkCursor, created: Option<&str>) -> Page {
        let created_at = b.created_at.or(parse_ts(created));
        let newest = match (c.max_updated_at, created_at) {
            (Some(m), Some(t)) => Some(m.min(t)),
            (m, _) => m,
        };
        let next_min = match newest {
            Some(m) => c.updated_at_min.max(Some(m - self.overlap())),
            None => c.updated_at_min,
        };
        let next = StreamCursor {
            updated_at_min: next_min,
            after: None,
            max_updated_at: None,
            synced_at: created_at.or(Some(Utc::now())),
            bulk: None,
        };
        Page {
            cursor: next.to_value(),
            caught_up: true,
            position: c.max_updated_at,
            ..Page::default()
        }
    }

    /// The deferred mapping of a bulk page: parse, reassemble, map.
    fn bulk_mapping(&self, stream: &str, op: &str, raw: RawPage) -> Deferred {
        let owned = self.owned_ctx(Utc::now());
        let orders = self.order_counter();
        let (stream, op) = (stream.to_string(), op.to_string());
        Deferred::new(move || {
            let (nodes, rejected) = assemble(&op, &stream, &raw.bytes, &raw.groups);
            let ctx = owned.ctx();
            let mut out = DeferredOutput {
                rejected,
                ..DeferredOutput::default()
            };
            // an object the typed mapping declines is read again as a tree, which
            // gives its event or the reason it is rejected
            let retree = |group: usize, out: &mut DeferredOutput| {
                let mut rejected = Vec::new();
                let node = tree(&op, &stream, &raw.bytes, &raw.groups[group], &mut rejected);
                out.rejected.extend(rejected);
                node
            };
            if stream == CUSTOMERS {
                for node in &nodes {
                    match node {
                        Node::Tree(node) => super::map_customer_into(node, &ctx, &mut out),
                        Node::Customer { customer, group } => {
                            match typed::map_customer(customer, &ctx) {
                                Some(ev) => out.events.push(ev),
                                None => {
                                    if let Some(node) = retree(*group, &mut out) {
                                        super::map_customer_into(&node, &ctx, &mut out);
                                    }
                                }
                            }
                        }
                        Node::Order { .. } => {}
                    }
                }
                return out;
            }
            let mut skipped = Vec::new();
            for node in nodes {
                match node {
                    Node::Tree(node) => orders.record(
                        mapping::map_order(&node, &ctx),
                        || super::order_gid(&node),
                        &mut out,
                        &mut skipped,
                    ),
                    Node::Order {
                        order,
                        items,
                        group,
                    } => {
                        let gid = || order.id.as_ref().map_or("?", |s| s.as_str()).to_string();
                        match typed::map_order(&order, &items, &ctx) {
                            Some(mapped) => orders.record(mapped, gid, &mut out, &mut skipped),
                            None => {
                                if let Some(node) = retree(group, &mut out) {
                                    orders.record(
                                        mapping::map_order(&node, &ctx),
                                        gid,
                                        &mut out,
                                        &mut skipped,
                                    );
                                }
                            }
                        }
                    }
                    Node::Customer { .. } => {}
                }
            }
            orders.count_skipped(skipped);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_only_as_keys() {
        let line = br#"{"id":"gid://shopify/LineItem/1","title":"\"__parentId\":\"x","__parentId":"gid://shopify/Order/5"}"#;
        assert!(is_child(line));
        let line = br#"{"id":"gid://shopify/Order/5","note":"\"__parentId\": \"x\"","tags":["__parentId"]}"#;
        assert!(!is_child(line));
        let line = br#"{"id":"gid://shopify/Order/5", "updatedAt" : "2026-01-05T00:00:00Z"}"#;
        assert_eq!(
            string_value(line, b"\"updatedAt\""),
            Some("2026-01-05T00:00:00Z")
        );
        assert_eq!(
            guess_id(b"{\"id\":\"gid://shopify/Order/7\",broken"),
            Some("gid://shopify/Order/7".into())
        );
    }

    fn test_ctx(normalizer: &socialcrm_schemas::Normalizer) -> mapping::MapCtx<'_> {
        mapping::MapCtx {
            shop: "s.myshopify.com",
            source: "shopify:s.myshopify.com",
            received_at: "2026-02-01T00:00:00Z".parse().expect("time"),
            include_test_orders: false,
            normalizer,
        }
    }

    /// The groups of a page, cut as the fetch chain cuts them.
    fn groups_of(text: &str) -> Vec<Group> {
        let b = text.as_bytes();
        let mut groups = Vec::new();
        let mut pos = 0;
        let mut n = 0;
        for line in text.split_inclusive('\n') {
            n += 1;
            let body = (pos, pos + line.len() - 1);
            if is_child(&b[body.0..body.1]) {
                match groups.last_mut() {
                    Some(Group { children, .. }) => children.push((n, body.0, body.1)),
                    None => groups.push(Group {
                        line: n,
                        root: None,
                        children: vec![(n, body.0, body.1)],
                    }),
                }
            } else {
                groups.push(Group {
                    line: n,
                    root: Some(body),
                    children: Vec::new(),
                });
            }
            pos += line.len();
        }
        groups
    }

    fn bag(amount: &str) -> String {
        format!(
            r#"{{"shopMoney":{{"amount":{amount},"currencyCode":"EUR"}},"presentmentMoney":{{"amount":"1.5","currencyCode":"USD"}}}}"#
        )
    }

    /// An order line with tricky but valid fields (escapes, amounts as numbers and
    /// strings, nulls, a refund without `createdAt`).
    fn order_line(n: u32) -> String {
        format!(
            r##"{{"id":"gid://shopify/Order/{n}","name":"#10{n}","email":"Ann{n}@Example.com","phone":"+1 212 555 01{n:02}","createdAt":"2026-01-05T00:00:00Z","updatedAt":"2026-01-06T00:00:00Z","processedAt":null,"cancelledAt":null,"test":false,"customer":{{"id":"gid://shopify/Customer/{n}"}},"tags":["vip","a \"quoted\" tag"],"discountCodes":[],"displayFinancialStatus":"PAID","displayFulfillmentStatus":null,"sourceName":"web","totalPriceSet":{},"subtotalPriceSet":{},"totalDiscountsSet":null,"totalTaxSet":{},"totalShippingPriceSet":{},"totalRefundedSet":{},"customerJourneySummary":{{"firstVisit":{{"occurredAt":"2026-01-01T00:00:00Z","landingPage":"https://s.example/p?utm_source=x","referrerUrl":null,"source":"x","utmParameters":{{"campaign":"winter","source":"x","medium":null,"content":null,"term":null}}}},"lastVisit":null}},"refunds":[{{"id":"gid://shopify/Refund/{n}","createdAt":null,"note":"dam\u00e4ged","totalRefundedSet":{}}}]}}"##,
            bag(r#""10.00""#),
            bag("9"),
            bag("1.90"),
            bag(r#""4.90""#),
            bag(r#""5""#),
            bag("5"),
        )
    }

    fn item_line(n: u32, id: u32, quantity: &str) -> String {
        format!(
            r#"{{"id":"gid://shopify/LineItem/{id}","title":"Pro\u0064uct","variantTitle":"M","sku":"","quantity":{quantity},"product":{{"id":"gid://shopify/Product/7","productType":"Shoes"}},"originalUnitPriceSet":{{"shopMoney":{{"amount":"3.3","currencyCode":"EUR"}}}},"discountedTotalSet":null,"__parentId":"gid://shopify/Order/{n}"}}"#
        )
    }

    /// Orders read as typed lines give what their trees give; an order that the
    /// typed reading declines is read as a tree, which gives its event or says why.
    #[test]
    fn typed_lines_map_as_their_trees() {
        let o = order_line;
        // (the page, whether the typed reading takes the order)
        let cases: Vec<(String, bool)> = vec![
            (
                format!(
                    "{}\n{}\n{}\n",
                    o(1),
                    item_line(1, 1, "2"),
                    item_line(1, 2, "1")
                ),
                true,
            ),
            // a duplicate key (the tree keeps the last value)
            (
                format!(
                    "{}\n",
                    o(2).replacen(r#""test":false"#, r#""test":false,"test":true"#, 1)
                ),
                false,
            ),
            (
                format!("{}\n", o(3).replace(r#""test":false"#, r#""test":true"#)),
                true,
            ),
            (
                format!("{}\n", o(4).replace("Customer/4", "Customer/x4")),
                false,
            ),
            (format!("{}\n{}\n", o(5), item_line(5, 5, "1.5")), false),
            (
                format!("{}\n{}\n", o(6), item_line(6, 6, "18446744073709551615")),
                false,
            ),
            (format!("{}\n", o(7).replace("Refund/7", "Refund/x")), false),
            (
                format!(
                    "{}\n",
                    o(8).replace(r#""amount":9,"#, r#""amount":"nine","#)
                ),
                false,
            ),
            (
                format!("{}\n", o(9).replace("2026-01-06T00:00:00Z", "yesterday")),
                false,
            ),
            (
                format!("{}\n", o(10).replace(r#""tags":["vip","#, r#""tags":[1,"#)),
                false,
            ),
            (
                format!(
                    "{}\n",
                    o(11)
                        .replace(
                            r#""email":"Ann11@Example.com","phone":"+1 212 555 0111","#,
                            ""
                        )
                        .replace(
                            r#""customer":{"id":"gid://shopify/Customer/11"}"#,
                            r#""customer":null"#
                        )
                ),
                true,
            ),
        ];
        let normalizer = socialcrm_schemas::Normalizer::default();
        let ctx = test_ctx(&normalizer);
        let mut outcomes = std::collections::BTreeSet::new();
        for (text, typed_takes_it) in cases {
            let b = text.as_bytes();
            let groups = groups_of(&text);
            assert_eq!(groups.len(), 1, "{text}");
            let mut rejected = Vec::new();
            let tree =
                tree("op", super::super::ORDERS, b, &groups[0], &mut rejected).expect("a tree");
            assert!(rejected.is_empty());
            let want = mapping::map_order(&tree, &ctx);
            let typed = typed_order(b, &groups[0])
                .and_then(|(o, items)| typed::map_order(&o, &items, &ctx));
            assert_eq!(typed.is_some(), typed_takes_it, "{text}");
            // declined: the page's mapping reads the tree (`bulk_mapping`)
            if let Some(got) = typed {
                assert_eq!(got.events, want.events, "{text}");
                assert_eq!(got.skipped, want.skipped, "{text}");
                assert!(got.rejected.is_empty() && want.rejected.is_empty());
            }
            outcomes.insert((
                want.events.len(),
                want.rejected.len(),
                want.skipped.map(|s| s.as_str()),
            ));
        }
        // the cases cover orders with refunds, test orders, orders without a
        // person, rejected orders and rejected refunds
        assert!(outcomes.contains(&(2, 0, None)), "{outcomes:?}");
        assert!(
            outcomes.contains(&(0, 0, Some("test_order"))),
            "{outcomes:?}"
        );
        assert!(
            outcomes.contains(&(0, 0, Some("no_identifier"))),
            "{outcomes:?}"
        );
        assert!(outcomes.contains(&(0, 1, None)), "{outcomes:?}");
        assert!(outcomes.contains(&(1, 1, None)), "{outcomes:?}");
    }

    /// Customers read as typed lines give what their trees give.
    #[test]
    fn typed_customer_lines_map_as_their_trees() {
        let c = |n: u32| {
            format!(
                r#"{{"id":"gid://shopify/Customer/{n}","updatedAt":"2026-01-06T00:00:00Z","createdAt":"2025-01-06T00:00:00Z","defaultEmailAddress":{{"emailAddress":"Ann{n}@Example.com","marketingState":"SUBSCRIBED"}},"defaultPhoneNumber":{{"phoneNumber":"+1 212 555 01{n:02}","marketingState":null}},"firstName":" Ann ","lastName":"M\u00fcller","tags":["vip"],"numberOfOrders":"3","amountSpent":{{"amount":"12.5","currencyCode":"EUR"}},"state":"ENABLED","verifiedEmail":true,"locale":"de","defaultAddress":{{"city":"Berlin","provinceCode":null,"countryCodeV2":"DE"}}}}"#
            )
        };
        let cases: Vec<(String, bool)> = vec![
            (c(1), true),
            (c(2).replace(r#""numberOfOrders":"3""#, r#""numberOfOrders":7"#), true),
            (c(3).replace(r#""defaultPhoneNumber":{"phoneNumber":"+1 212 555 0103","marketingState":null},"#, ""), true),
            (c(4).replace(r#""firstName":" Ann ","lastName":"M\u00fcller","#, r#""firstName":null,"#), true),
            // the tree takes a count as any number; the typed reading declines it
            (c(5).replace(r#""numberOfOrders":"3""#, r#""numberOfOrders":1.5"#), false),
            (c(6).replace(r#""numberOfOrders":"3""#, r#""numberOfOrders":"many""#), false),
            (c(7).replace("Customer/7", "Customer/x"), false),
            (c(8).replace("2026-01-06T00:00:00Z", "now"), false),
            (c(9).replace(r#""tags":["vip"]"#, r#""tags":[9]"#), false),
            (c(10).replace(r#""amount":"12.5""#, r#""amount":"lots""#), false),
        ];
        let normalizer = socialcrm_schemas::Normalizer::default();
        let ctx = test_ctx(&normalizer);
        let mut rejected_trees = 0;
        for (line, typed_takes_it) in cases {
            let text = format!("{line}\n");
            let groups = groups_of(&text);
            let mut rejected = Vec::new();
            let tree =
                tree("op", CUSTOMERS, text.as_bytes(), &groups[0], &mut rejected).expect("a tree");
            let want = mapping::map_customer(&tree, &ctx);
            rejected_trees += usize::from(want.is_err());
            let typed = typed_customer(text.as_bytes(), &groups[0])
                .and_then(|c| typed::map_customer(&c, &ctx));
            assert_eq!(typed.is_some(), typed_takes_it, "{line}");
            if let Some(got) = typed {
                assert_eq!(Some(got), want.ok(), "{line}");
            }
        }
        assert_eq!(rejected_trees, 5);
    }

    #[test]
    fn orders_are_reassembled_and_strays_rejected() {
        let text = concat!(
            r#"{"id":"gid://shopify/LineItem/0","__parentId":"gid://shopify/Order/0"}"#,
            "\n",
            r#"{"id":"gid://shopify/Order/1","updatedAt":"2026-01-05T00:00:00Z"}"#,
            "\n",
            r#"{"id":"gid://shopify/LineItem/1","__parentId":"gid://shopify/Order/1"}"#,
            "\n",
            r#"{"id":"gid://shopify/LineItem/9","__parentId":"gid://shopify/Order/9"}"#,
            "\n",
            r#"{"id":"gid://shopify/Order/2","updatedAt":"2026-01-05T00:00:01Z""#,
            "\n",
        );
        let b = text.as_bytes();
        let groups = groups_of(text);
        let (nodes, rejected) = assemble("op", super::super::ORDERS, b, &groups);
        // Order/1 is followed by a stray child of Order/9: the tree's reading
        // rejects the stray and keeps the order
        assert_eq!(nodes.len(), 1);
        let Node::Tree(order) = &nodes[0] else {
            panic!("an order with a stray child is read as a tree");
        };
        assert_eq!(
            order["lineItems"]["nodes"],
            json!([{"id": "gid://shopify/LineItem/1"}])
        );
        let ids: Vec<&str> = rejected.iter().map(|r| r.object_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "gid://shopify/LineItem/0",
                "gid://shopify/LineItem/9",
                "gid://shopify/Order/2"
            ]
        );
        assert!(
            rejected[2].reason.contains("line 5 of bulk operation op"),
            "{}",
            rejected[2].reason
        );
    }
}
