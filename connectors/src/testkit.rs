//! Local stand-ins for provider APIs, for tests and benchmarks (feature
//! `testkit`). Each connector's `fake.rs` builds an axum `Router` that serves its
//! provider's documented format; [`FakeServer`] runs it on a free loopback port and
//! adds what every connector test needs: injected faults (429 with `Retry-After`,
//! 503, 401, ...), a delay per request (to kill a connector mid-backfill), and a
//! record of the requests made.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// A canned failure for one request.
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Only requests whose path contains this (empty = any).
    pub path_contains: String,
}

impl Fault {
    pub fn status(status: u16) -> Fault {
        Fault {
            status,
            headers: Vec::new(),
            body: format!("{{\"error\":\"injected {status}\"}}"),
            path_contains: String::new(),
        }
    }
    /// 429 with `Retry-After: <secs>`.
    pub fn too_many(retry_after_secs: u64) -> Fault {
        Fault::status(429).header("retry-after", &retry_after_secs.to_string())
    }
    pub fn header(mut self, k: &str, v: &str) -> Fault {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn body(mut self, b: &str) -> Fault {
        self.body = b.to_string();
        self
    }
    pub fn on_path(mut self, p: &str) -> Fault {
        self.path_contains = p.to_string();
        self
    }
}

/// One request the fake server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    /// Status answered.
    pub status: u16,
}

#[derive(Default)]
struct Control {
    faults: VecDeque<Fault>,
    /// Faults applied to every request until cleared (e.g. a permanent 401).
    sticky: Option<Fault>,
    delay: Duration,
    seen: Vec<Seen>,
}

/// Handle to control a running fake server.
#[derive(Clone, Default)]
pub struct Controls(Arc<Mutex<Control>>);

impl Controls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// The next matching request gets this fault (FIFO).
    pub fn push_fault(&self, f: Fault) {
        self.lock().faults.push_back(f);
    }
    /// Every request gets this fault until [`clear_sticky`](Self::clear_sticky).
    pub fn set_sticky(&self, f: Fault) {
        self.lock().sticky = Some(f);
    }
    pub fn clear_sticky(&self) {
        self.lock().sticky = None;
    }
    /// Every request waits this long before it is answered.
    pub fn set_delay(&self, d: Duration) {
        self.lock().delay = d;
    }
    /// Requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }
    /// Requests answered with a 2xx so far.
    pub fn ok_count(&self) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|s| (200..300).contains(&s.status))
            .count()
    }
}

async fn control_layer(
    axum::extract::State(c): axum::extract::State<Controls>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let (fault, delay) = {
        let mut g = c.lock();
        let fault = match g.sticky.clone() {
            Some(f) => Some(f),
            None => {
                let pos = g
                    .faults
                    .iter()
                    .position(|f| f.path_contains.is_empty() || path.contains(&f.path_contains));
                pos.and_then(|i| g.faults.remove(i))
            }
        };
        (fault, g.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let resp = match fault {
        Some(f) => {
            let mut r = Response::new(Body::from(f.body.clone()));
            *r.status_mut() =
                StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            for (k, v) in &f.headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::try_from(k.as_str()),
                    HeaderValue::try_from(v.as_str()),
                ) {
                    r.headers_mut().insert(k, v);
                }
            }
            r
        }
        None => next.run(req).await.into_response(),
    };
    c.lock().seen.push(Seen {
        method,
        uri,
        headers,
        status: resp.status().as_u16(),
    });
    resp
}

/// A fake provider on a free loopback port.
pub struct FakeServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    pub controls: Controls,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Serves `router` (inside the current tokio runtime).
    pub async fn start(router: Router) -> FakeServer {
        let controls = Controls::default();
        let app = router.layer(middleware::from_fn_with_state(
            controls.clone(),
            control_layer,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake server");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeServer {
            addr,
            base_url: format!("http://{addr}"),
            controls,
            task,
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fake provider running on its own thread and runtime, for blocking tests
/// (end-to-end tests that drive the `socialcrm` binary).
pub struct BlockingFakeServer {
    pub base_url: String,
    pub controls: Controls,
    _rt: tokio::runtime::Runtime,
    _server: FakeServer,
}

impl BlockingFakeServer {
    pub fn start(make_router: impl FnOnce() -> Router) -> BlockingFakeServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt.block_on(FakeServer::start(make_router()));
        BlockingFakeServer {
            base_url: server.base_url.clone(),
            controls: server.controls.clone(),
            _rt: rt,
            _server: server,
        }
    }
}
