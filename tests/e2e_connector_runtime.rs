//! The connector runtime as a service: `/metrics` and `/health` of a running
//! `socialcrm connector run`, progress log lines during a backfill on a
//! non-terminal, `caught up`, a clean stop on SIGTERM, and `connector list`.

mod common;

use std::time::Duration;

use common::*;
use socialcrm_connectors::mastodon::fake;
use socialcrm_connectors::testkit::BlockingFakeServer;

#[test]
fn a_running_connector_serves_metrics_health_and_logs_progress() {
    let mut w = World::new("conn_runtime");
    let data = fake::generate(400, 5);
    let server = BlockingFakeServer::start({
        let data = data.clone();
        move || fake::router(data)
    });
    // 20 pages of 20 at 300 ms each: the backfill lasts longer than one 5 s progress period
    server.controls.set_delay(Duration::from_millis(300));
    let metrics = format!("127.0.0.1:{}", free_port());
    let state = w.dir.path().join("conn-state");
    w.append_config(&format!(
        "[connectors.brand]\ntype = \"mastodon\"\ninstance_url = \"{}\"\naccess_token = \"{}\"\npage_size = 20\nstate_dir = \"{}\"\nmetrics_listen = \"{metrics}\"\npoll_interval_secs = 1",
        server.base_url,
        fake::FAKE_TOKEN,
        state.display()
    ));

    let out = w.cli(&["connector", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("brand\tmastodon"), "{listed}");

    let i = w.spawn_connector("brand", &["--since", "2000-01-01"]);
    let health = format!("http://{metrics}/health");
    wait_until(Duration::from_secs(30), "connector /health", || {
        http::blocking_get_ok(&health)
    });
    let url = format!("http://{metrics}/metrics");
    let produced = || -> u64 {
        http::request("GET", &url, &[], b"")
            .map(|r| r.body)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("socialcrm_connector_events_produced_total{"))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum::<f64>() as u64
    };
    wait_until(
        Duration::from_secs(60),
        "400 events produced (metrics)",
        || produced() >= 400,
    );
    let body = http::request("GET", &url, &[], b"").expect("metrics").body;
    for m in [
        "socialcrm_connector_api_calls_total{",
        "socialcrm_connector_pages_total{",
        "socialcrm_connector_cursor_lag_seconds{",
    ] {
        assert!(body.contains(m), "{m} missing from /metrics:\n{body}");
    }
    wait_until(Duration::from_secs(30), "caught up", || {
        w.log("connector-brand").contains("caught up")
    });
    let log = w.log("connector-brand");
    assert!(log.contains("sync progress"), "no progress line in:\n{log}");
    assert!(
        !log.contains(fake::FAKE_TOKEN),
        "the token leaked into the log"
    );

    // SIGTERM: a clean stop with the cursor stored
    let pid = w.child(i).id();
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    let status = w.child(i).wait().expect("wait");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        w.log("connector-brand")
    );
    assert!(w.log("connector-brand").contains("connector stopped"));
    let cursors = std::fs::read_to_string(state.join("brand.cursors.json")).expect("cursor file");
    assert!(cursors.contains("min_id"), "{cursors}");
}
