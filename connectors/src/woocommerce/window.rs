//! One step of a list walk read by several requests at once.
//!
//! A walk step asks for the list from an offset. With `concurrent_pages` > 1
//! and more of the list to come (`X-WP-Total`), the step sends that many
//! requests together, each for the next window of the list, and each window
//! starting [`OVERLAP`] objects before the previous one ends. The lists only
//! lose objects in the middle (an order modified moves to the end, a customer
//! deleted leaves) and grow at the end, so an object keeps its position between
//! two requests exactly when nothing before it left in between: when the
//! overlapping objects of two windows are the same texts, the windows are
//! consecutive parts of the list with nothing skipped between them. The first
//! window that does not join its predecessor ends the step there; the walk's
//! next step starts from what was consumed, as after a one-request step.
//!
//! See "Concurrent pages" in `docs/connectors/woocommerce.md`.

use serde_json::value::RawValue;

use super::OVERLAP;

/// The windows of one step, joined.
#[derive(Debug, Default)]
pub struct Joined {
    /// The list from the step's offset on, each object once.
    pub items: Vec<Box<RawValue>>,
    /// A window was shorter than a page: the step reached the end of the list.
    pub reached_end: bool,
    /// Windows used (the first that did not join and those after it are not).
    pub windows: usize,
}

/// The `offset` of each of a step's `n` requests, the first at `offset`.
pub fn offsets(offset: u64, per_page: u64, n: usize) -> Vec<u64> {
    let stride = per_page.saturating_sub(OVERLAP).max(1);
    (0..n as u64).map(|i| offset + i * stride).collect()
}

/// How many requests a step sends: one when the rest of the list is unknown
/// (the first step, or after the walk caught up), else enough windows to cover
/// `remaining` objects, at most `max`. Windows need `per_page` > [`OVERLAP`].
pub fn requests(max: u32, per_page: u64, remaining: Option<u64>) -> usize {
    if max <= 1 || per_page <= OVERLAP {
        return 1;
    }
    let Some(remaining) = remaining else {
        return 1;
    };
    let more = remaining
        .saturating_sub(per_page)
        .div_ceil(per_page - OVERLAP);
    (1 + more).min(u64::from(max)) as usize
}

/// Joins a step's windows in order (`windows[i]` is the answer at
/// `offsets(..)[i]`; a failed request ends the list of windows given). A
/// window joins when the previous one was a full page and its first
/// [`OVERLAP`] objects are the previous window's last ones, text for text.
pub fn join(windows: Vec<Vec<Box<RawValue>>>, per_page: usize) -> Joined {
    let overlap = OVERLAP as usize;
    let mut windows = windows.into_iter();
    let Some(first) = windows.next() else {
        return Joined {
            reached_end: true,
            ..Joined::default()
        };
    };
    let mut out = Joined {
        reached_end: first.len() < per_page,
        items: first,
        windows: 1,
    };
    for next in windows {
        if out.reached_end || per_page <= overlap || out.items.len() < overlap {
            break;
        }
        let tail = &out.items[out.items.len() - overlap..];
        let joins = next.len() >= overlap
            && next[..overlap]
                .iter()
                .zip(tail)
                .all(|(a, b)| a.get() == b.get());
        if !joins {
            break;
        }
        out.reached_end = next.len() < per_page;
        out.items.extend(next.into_iter().skip(overlap));
        out.windows += 1;
    }
    out
}
