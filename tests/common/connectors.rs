//! Helpers for connector end-to-end tests: configure an instance in a [`World`],
//! run it (to completion or in the background), kill it mid-run, and read back the
//! event ids that reached ClickHouse.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{free_port, wait_until, World};

impl World {
    /// Waits until the pipeline committed every batch of the events topic. A batch's
    /// tables (events, identities, aliases, profiles) are inserted concurrently, so
    /// read profiles only after this.
    pub fn wait_caught_up(&self) {
        let out = self.cli(&["lag", "--wait", "--timeout-secs", "120"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a CLI command that must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "socialcrm {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `socialcrm profile get <identifier> --json`, which must succeed; parsed.
    pub fn profile_json(&self, identifier: &str) -> serde_json::Value {
        let out = self.cli(&["profile", "get", identifier, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json profile")
    }

    /// The current customer of an identifier (`identities FINAL`; empty if none).
    pub fn customer_of(&self, id_type: &str, id_value: &str) -> String {
        self.query(&format!(
            "SELECT customer_id FROM identities FINAL WHERE id_type = '{id_type}' AND id_value = '{id_value}'"
        ))
        .trim()
        .to_string()
    }

    /// Appends raw TOML to this world's config (e.g. a `[scoring]` section).
    pub fn append_config(&self, toml: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .expect("open config");
        f.write_all(format!("\n{toml}\n").as_bytes())
            .expect("append config");
    }

    /// Appends `[connectors.<name>]` with `body` (TOML lines, e.g. `type`, API URL,
    /// secrets) and this world's state dir and a free metrics port.
    pub fn add_connector(&mut self, name: &str, body: &str) {
        let state = self.dir.path().join("connector-state");
        let section = format!(
            "\n[connectors.{name}]\n{body}\nstate_dir = \"{}\"\nmetrics_listen = \"127.0.0.1:{}\"\npoll_interval_secs = 1\nmax_retry_secs = 60\n",
            state.display(),
            free_port()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .expect("open config");
        f.write_all(section.as_bytes()).expect("append config");
    }

    /// `socialcrm connector run <name> --once <extra>` to completion; stderr is
    /// appended to `connector-<name>.log`.
    pub fn run_connector_once(&self, name: &str, extra: &[&str]) -> Output {
        self.run_connector_once_env(name, extra, &[])
    }

    /// [`run_connector_once`](Self::run_connector_once) with extra environment.
    pub fn run_connector_once_env(
        &self,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&format!("connector-{name}")))
            .expect("log file");
        let mut cmd = Command::new(Self::bin());
        cmd.arg("--config")
            .arg(&self.config)
            .args(["connector", "run", name, "--once"])
            .args(extra)
            .env("RUST_BACKTRACE", "0")
            .stderr(Stdio::from(log.try_clone().expect("log clone")));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run connector")
    }

    /// Starts `socialcrm connector run <name> <extra>` in the background (stderr in
    /// `connector-<name>.log`); returns the child index for [`World::child`].
    pub fn spawn_connector(&mut self, name: &str, extra: &[&str]) -> usize {
        let mut args = vec!["connector", "run", name];
        args.extend_from_slice(extra);
        self.spawn(&format!("connector-{name}"), &args)
    }

    /// kill -9 of a child started by [`World::spawn`].
    pub fn kill(&mut self, i: usize) {
        let c = self.child(i);
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Waits until `crm.events` holds `n` distinct event ids (the pipeline must be
    /// running), then returns them.
    pub fn wait_event_ids(&self, n: usize, timeout: Duration) -> BTreeSet<String> {
        wait_until(
            timeout,
            &format!("{n} distinct events in ClickHouse"),
            || self.query_u64("SELECT uniqExact(event_id) FROM events") as usize >= n,
        );
        self.event_ids()
    }

    /// Distinct event ids in `crm.events`.
    pub fn event_ids(&self) -> BTreeSet<String> {
        self.query("SELECT DISTINCT event_id FROM events")
            .lines()
            .map(|l| l.to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}
