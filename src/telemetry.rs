//! Metrics (DESIGN: operators see throughput, lag, errors): one Prometheus recorder
//! per process, rendered at `/metrics` next to `/health`.

use anyhow::{Context, Result};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the global recorder; `None` if one is already installed.
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new().install_recorder().ok()
}

/// `/metrics` (Prometheus text format).
pub fn metrics_router(handle: Option<PrometheusHandle>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let h = handle.clone();
            async move { h.map(|h| h.render()).unwrap_or_default() }
        }),
    )
}

/// Serves `/metrics` and `/health` on `listen` in the background (empty = off).
pub async fn spawn_metrics_server(listen: &str, handle: Option<PrometheusHandle>) -> Result<()> {
    spawn_metrics_server_for(listen, "pipeline.metrics_listen", handle).await
}

/// [`spawn_metrics_server`] with the config field named in errors.
pub async fn spawn_metrics_server_for(
    listen: &str,
    field: &str,
    handle: Option<PrometheusHandle>,
) -> Result<()> {
    if listen.trim().is_empty() {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("{field}: cannot listen on {listen}"))?;
    let app = metrics_router(handle).route("/health", get(|| async { "ok" }));
    tracing::info!(listen, "metrics endpoint listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(())
}
