//! The one TOML config file (DESIGN §3.7): `--config` or `SOCIALCRM_CONFIG`;
//! `${VAR}` (and `${VAR:-default}`) interpolation for secrets; unknown keys are
//! rejected with the key named. With no file, the local defaults of DESIGN §3.6.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use socialcrm_connectors::segment::CollectorConfig;
use socialcrm_pipeline::config::{IdentityConfig, PipelineConfig};
use socialcrm_schemas::clickhouse_config::ClickHouseConfig;
use socialcrm_schemas::kafka::KafkaConfig;

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka brokers, topic names, client properties.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// ClickHouse endpoint and database.
    #[serde(default)]
    pub clickhouse: ClickHouseConfig,
    /// Web collector (Segment-compatible).
    #[serde(default)]
    pub collector: CollectorConfig,
    /// Pipeline batching and state.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Identity-resolution rules.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Scoring weights, half-lives and segment rules (docs/scoring.md).
    #[serde(default)]
    pub scoring: socialcrm_pipeline::scoring::ScoringConfig,
    /// HTTP API and web page (`socialcrm serve`, docs/api.md).
    #[serde(default)]
    pub api: crate::api::ApiConfig,
    /// Personal data: hashing of identifiers and traits, IP addresses (docs/privacy.md).
    #[serde(default)]
    pub privacy: socialcrm_schemas::privacy::PrivacyConfig,
    /// Pull connector instances: `[connectors.<name>]` (docs/connectors/).
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub connectors: toml::Table,
}

impl Config {
    /// Loads `path`, or the defaults when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&raw, |k| std::env::var(k).ok())
            .with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses config text; `${VAR}` inside string values is looked up by `env`
    /// (comments are left alone).
    pub fn parse(raw: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        // structure and types first, on the file as written: errors name the key and line
        // (interpolation only changes the content of strings, so it cannot fix or break these)
        let _: Config = toml::from_str(raw).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut doc: toml::Table = toml::from_str(raw).map_err(|e| anyhow::anyhow!("{e}"))?;
        for (key, value) in doc.iter_mut() {
            interpolate_value(key, value, &env)?;
        }
        let mut cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.message().trim()))?;
        cfg.clickhouse.validate().map_err(anyhow::Error::msg)?;
        cfg.pipeline.validate().map_err(anyhow::Error::msg)?;
        cfg.scoring.validate().map_err(anyhow::Error::msg)?;
        cfg.identity.validate().map_err(anyhow::Error::msg)?;
        cfg.api.validate().map_err(anyhow::Error::msg)?;
        cfg.privacy.validate().map_err(anyhow::Error::msg)?;
        // the collector applies `[privacy] ip` before events reach Kafka
        cfg.collector.ip = cfg.privacy.ip;
        socialcrm_connectors::registry::parse_instances(&cfg.connectors)
            .map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    /// The configured connector instances (validated by [`Config::parse`]).
    pub fn connector_instances(
        &self,
    ) -> Result<std::collections::BTreeMap<String, socialcrm_connectors::registry::Instance>> {
        socialcrm_connectors::registry::parse_instances(&self.connectors)
            .map_err(anyhow::Error::msg)
    }
}

fn interpolate_value(
    path: &str,
    v: &mut toml::Value,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<()> {
    match v {
        toml::Value::String(s) => {
            *s = interpolate(s, env).with_context(|| format!("in `{path}`"))?;
        }
        toml::Value::Array(a) => {
            for item in a {
                interpolate_value(path, item, env)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                interpolate_value(&format!("{path}.{k}"), item, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. A missing
/// variable without default is an error naming it (the value is never printed).
pub fn interpolate(raw: &str, env: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                bail!("unterminated `${{` in config");
            };
            let spec = &body[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!("invalid variable name `{name}` in config interpolation");
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => bail!("environment variable `{name}` is not set (referenced as ${{{name}}} in the config)"),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_local_ones() {
        let c = Config::parse("", |_| None).expect("empty config");
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.clickhouse.url, "http://127.0.0.1:8123");
        assert_eq!(c.clickhouse.database, "crm");
        assert_eq!(c.collector.listen, "127.0.0.1:8088");
        let keys = c.collector.resolved_keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key, "local-dev-key");
        assert_eq!(c.kafka.topics.profiles, "crm.profiles");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::parse("[clickhouse]\nurll = \"x\"\n", |_| None).expect_err("unknown");
        assert!(format!("{e:#}").contains("urll"), "{e:#}");
        let e = Config::parse("[kafak]\n", |_| None).expect_err("unknown section");
        assert!(format!("{e:#}").contains("kafak"), "{e:#}");
    }

    #[test]
    fn interpolation_and_missing_variables() {
        let env = |k: &str| (k == "CH_PASS").then(|| "s3\"cret".to_string());
        let c = Config::parse(
            "[clickhouse]\npassword = \"${CH_PASS}\"\nuser = \"${CH_USER:-reader}\"\n",
            env,
        )
        .expect("interpolated");
        assert_eq!(c.clickhouse.password, "s3\"cret");
        assert_eq!(c.clickhouse.user, "reader");
        let e =
            Config::parse("[clickhouse]\npassword = \"${NOPE}\"\n", |_| None).expect_err("missing");
        assert!(format!("{e:#}").contains("NOPE"));
        assert_eq!(interpolate("a$$b $x", |_| None).expect("ok"), "a$b $x");
    }

    #[test]
    fn bad_values_fail_at_start_with_the_field() {
        let e = Config::parse("[pipeline]\nbatch_max_events = 0\n", |_| None).expect_err("bad");
        assert!(format!("{e:#}").contains("batch_max_events"), "{e:#}");
        let e = Config::parse("[pipeline]\nbatch_max_events = \"many\"\n", |_| None)
            .expect_err("bad type");
        assert!(format!("{e:#}").contains("batch_max_events"), "{e:#}");
        let e = Config::parse("[identity]\nlimits = { emial = 2 }\n", |_| None)
            .expect_err("unknown identifier type");
        assert!(format!("{e:#}").contains("identity.limits"), "{e:#}");
        let e = Config::parse("[identity]\nblocked_patterns = [\"(\"]\n", |_| None)
            .expect_err("bad regex");
        assert!(
            format!("{e:#}").contains("identity.blocked_patterns"),
            "{e:#}"
        );
    }

    #[test]
    fn compose_config_parses_with_its_environment() {
        let raw = include_str!("../deploy/compose/socialcrm.toml");
        let env = |k: &str| (k == "KAFKA_BROKERS").then(|| "kafka:19092".to_string());
        let c = Config::parse(raw, env).expect("compose config");
        assert_eq!(c.kafka.brokers, "kafka:19092");
        assert_eq!(c.clickhouse.url, "http://clickhouse:8123");
        assert!(c.collector.validate().is_ok());
        assert_eq!(c.api.listen, "0.0.0.0:8089");
        assert_eq!(c.api.keys[0].key, "local-api-key");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let env = |k: &str| (k == "S").then(|| "hunter2-secret".to_string());
        let raw = "[clickhouse]\npassword = \"${S}\"\n[collector]\nwrite_keys = [\"${S}\"]\n[kafka.properties]\n\"sasl.password\" = \"${S}\"\n[api]\nkeys = [{ name = \"a\", key = \"${S}\" }]\n";
        let c = Config::parse(raw, env).expect("config");
        assert_eq!(c.clickhouse.password, "hunter2-secret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sasl.password"));
    }

    #[test]
    fn sample_connector_sections_parse_when_uncommented() {
        let raw = include_str!("../deploy/local/socialcrm.toml");
        let (head, tail) = raw
            .split_once("# Connector instances")
            .expect("connector examples in the sample");
        let uncommented: String = tail
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("tg");
        std::fs::write(&secret, "123456:ABC-token\n").expect("secret");
        let text = format!(
            "{head}\n{}",
            uncommented.replace(
                "/run/secrets/telegram_bot_token",
                &secret.display().to_string()
            )
        );
        let c = Config::parse(&text, |_| Some("from-env".into())).expect("uncommented sample");
        let inst = c.connector_instances().expect("instances");
        let kinds: Vec<&str> = inst.values().map(|i| i.config.kind()).collect();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        for k in socialcrm_connectors::registry::KINDS {
            assert!(kinds.contains(k), "{k} missing from {kinds:?}");
        }
    }

    #[test]
    fn sample_config_parses() {
        let raw = include_str!("../deploy/local/socialcrm.toml");
        let c = Config::parse(raw, |_| None).expect("sample config");
        let keys = c.collector.resolved_keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key, "local-dev-key");
        // the sample shows the defaults
        assert_eq!(c.api, crate::api::ApiConfig::default());
    }

    #[test]
    fn privacy_section_parses_and_names_bad_fields() {
        let env = |k: &str| (k == "SALT").then(|| "a-long-enough-salt".to_string());
        let c = Config::parse(
            "[privacy]\nsalt = \"${SALT}\"\nhash_identifier_types = [\"email\"]\nip = \"drop\"\n",
            env,
        )
        .expect("privacy");
        assert_eq!(c.privacy.ip, socialcrm_schemas::privacy::IpPolicy::Drop);
        assert_eq!(
            Config::default().privacy.ip,
            socialcrm_schemas::privacy::IpPolicy::Truncate
        );
        let e = Config::parse("[privacy]\nhash_traits = [\"address\"]\n", |_| None)
            .expect_err("no salt");
        assert!(format!("{e:#}").contains("privacy.salt"), "{e:#}");
        let e = Config::parse("[privacy]\nip = \"mask\"\n", |_| None).expect_err("bad ip");
        assert!(format!("{e:#}").contains("mask"), "{e:#}");
        let e = Config::parse("[privacy]\nsalty = \"x\"\n", |_| None).expect_err("unknown");
        assert!(format!("{e:#}").contains("salty"), "{e:#}");
        // the sample shows the defaults
        let sample = Config::parse(include_str!("../deploy/local/socialcrm.toml"), |_| None)
            .expect("sample config");
        assert_eq!(sample.privacy, Default::default());
    }

    #[test]
    fn api_read_model_is_memory_or_clickhouse() {
        let c = Config::parse("[api]\nread_model = \"clickhouse\"\n", |_| None).expect("ok");
        assert_eq!(c.api.read_model, crate::api::ReadModelMode::Clickhouse);
        assert_eq!(
            Config::default().api.read_model,
            crate::api::ReadModelMode::Memory
        );
        let e = Config::parse("[api]\nread_model = \"redis\"\n", |_| None).expect_err("bad");
        let m = format!("{e:#}");
        assert!(m.contains("read_model") && m.contains("redis"), "{m}");
        let e = Config::parse("[api]\nread_model_poll_ms = 0\n", |_| None).expect_err("bad");
        assert!(format!("{e:#}").contains("read_model_poll_ms"), "{e:#}");
        let e = Config::parse("[api]\nread_modle = \"memory\"\n", |_| None).expect_err("typo");
        assert!(format!("{e:#}").contains("read_modle"), "{e:#}");
    }

    #[test]
    fn bad_api_keys_fail_with_the_field_named() {
        let e = Config::parse(
            "[api]\nkeys = [{ name = \"a\", key = \"short\" }]\n",
            |_| None,
        )
        .expect_err("short key");
        assert!(format!("{e:#}").contains("api.keys[0] (a)"), "{e:#}");
        let e = Config::parse(
            "[api]\nkeys = [{ name = \"a\", key = \"long-enough\", scopes = [\"write\"] }]\n",
            |_| None,
        )
        .expect_err("unknown scope");
        assert!(format!("{e:#}").contains("write"), "{e:#}");
    }

    /// Every TOML example of docs/security.md is a valid config (files it names are
    /// swapped for real ones); Kafka examples without certificate files also create a
    /// librdkafka client.
    #[test]
    fn security_doc_examples_parse() {
        use rdkafka::producer::BaseProducer;
        let doc = include_str!("../docs/security.md");
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "from-a-file-123\n").expect("key file");
        // any PEM certificate will do for a CA file
        let ca = "/etc/ssl/certs/ca-certificates.crt";
        assert!(
            Path::new(ca).exists(),
            "{ca} is missing (apt-get install ca-certificates)"
        );
        let mut n = 0;
        for block in doc.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            let text = text
                .replace(
                    "/run/secrets/shop_backend_key",
                    &key_file.display().to_string(),
                )
                .replace("/etc/socialcrm/clickhouse-ca.pem", ca);
            let c = Config::parse(&text, |k| Some(format!("value-of-{k}"))).unwrap_or_else(|e| {
                panic!("docs/security.md example does not parse: {e:#}\n{text}")
            });
            c.collector
                .validate()
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            if !c.kafka.properties.is_empty() && !text.contains(".location") {
                let made: Result<BaseProducer, _> = c.kafka.client_config().create();
                assert!(made.is_ok(), "{:?}\n{text}", made.err());
            }
            n += 1;
        }
        assert!(n >= 6, "only {n} examples found");
    }
}
