//! The list of pull connectors, in one place: config parsing by type and the
//! dispatch of `socialcrm connector run <instance>`.

use std::collections::BTreeMap;
use std::future::Future;

use socialcrm_schemas::kafka::KafkaConfig;

use crate::runtime::config::{parse_source_config, split_runtime, RuntimeSettings};
use crate::runtime::{run_source, RunError, RunOptions, RunStats};
use crate::{mastodon, shopify, telegram, woocommerce, x};

/// Connector types, as written in `type = "..."`.
pub const KINDS: &[&str] = &["mastodon", "x", "telegram", "shopify", "woocommerce"];

/// One type's own config.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Mastodon(mastodon::Config),
    X(x::Config),
    Telegram(telegram::Config),
    Shopify(shopify::Config),
    WooCommerce(woocommerce::Config),
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Mastodon(_) => "mastodon",
            SourceConfig::X(_) => "x",
            SourceConfig::Telegram(_) => "telegram",
            SourceConfig::Shopify(_) => "shopify",
            SourceConfig::WooCommerce(_) => "woocommerce",
        }
    }
}

/// A configured connector instance (`[connectors.<name>]`).
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub settings: RuntimeSettings,
    pub config: SourceConfig,
}

/// Parses every `[connectors.<name>]` table; errors name the instance and key.
pub fn parse_instances(connectors: &toml::Table) -> Result<BTreeMap<String, Instance>, String> {
    let mut out = BTreeMap::new();
    for (name, value) in connectors {
        let prefix = format!("connectors.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "{prefix}: instance names may use letters, digits, `_` and `-` only"
            ));
        }
        let toml::Value::Table(table) = value.clone() else {
            return Err(format!("{prefix} must be a table ([{prefix}])"));
        };
        let mut table = table;
        let kind = match table.remove("type") {
            Some(toml::Value::String(t)) => t,
            Some(_) => return Err(format!("{prefix}.type must be a string")),
            None => name.clone(),
        };
        let (settings, rest) = split_runtime(&prefix, table)?;
        let config = match kind.as_str() {
            "mastodon" => SourceConfig::Mastodon(parse_source_config(&prefix, rest)?),
            "x" => SourceConfig::X(parse_source_config(&prefix, rest)?),
            "telegram" => SourceConfig::Telegram(parse_source_config(&prefix, rest)?),
            "shopify" => SourceConfig::Shopify(parse_source_config(&prefix, rest)?),
            "woocommerce" => SourceConfig::WooCommerce(parse_source_config(&prefix, rest)?),
            other => {
                return Err(format!(
                    "{prefix}.type: unknown connector type `{other}` (known: {})",
                    KINDS.join(", ")
                ))
            }
        };
        match &config {
            SourceConfig::Mastodon(c) => c.validate(&prefix)?,
            SourceConfig::X(c) => c.validate(&prefix)?,
            SourceConfig::Telegram(c) => c.validate(&prefix)?,
            SourceConfig::Shopify(c) => c.validate(&prefix)?,
            SourceConfig::WooCommerce(c) => c.validate(&prefix)?,
        }
        out.insert(
            name.clone(),
            Instance {
                name: name.clone(),
                settings,
                config,
            },
        );
    }
    Ok(out)
}

/// Runs one instance until shutdown (or until caught up with `once`).
pub async fn run(
    instance: Instance,
    since: Option<chrono::DateTime<chrono::Utc>>,
    once: bool,
    kafka: &KafkaConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunStats, RunError> {
    run_suppressed(instance, since, once, kafka, None, shutdown).await
}

/// [`run`], skipping events that carry an identifier of `suppression`
/// (erased people, docs/privacy.md).
pub async fn run_suppressed(
    instance: Instance,
    since: Option<chrono::DateTime<chrono::Utc>>,
    once: bool,
    kafka: &KafkaConfig,
    suppression: Option<socialcrm_schemas::suppression::SuppressionList>,
    shutdown: impl Future<Output = ()>,
) -> Result<RunStats, RunError> {
    let opts = RunOptions {
        instance: instance.name.clone(),
        settings: instance.settings.clone(),
        since,
        once,
        kafka: kafka.clone(),
        suppression,
    };
    let name = &instance.name;
    let s = &instance.settings;
    match instance.config {
        SourceConfig::Mastodon(c) => {
            run_source(
                mastodon::Source::new(name, c, s).map_err(RunError::Setup)?,
                opts,
                shutdown,
            )
            .await
        }
        SourceConfig::X(c) => {
            run_source(
                x::Source::new(name, c, s).map_err(RunError::Setup)?,
                opts,
                shutdown,
            )
            .await
        }
        SourceConfig::Telegram(c) => {
            run_source(
                telegram::Source::new(name, c, s).map_err(RunError::Setup)?,
                opts,
                shutdown,
            )
            .await
        }
        SourceConfig::Shopify(c) => {
            run_source(
                shopify::Source::new(name, c, s).map_err(RunError::Setup)?,
                opts,
                shutdown,
            )
            .await
        }
        SourceConfig::WooCommerce(c) => {
            run_source(
                woocommerce::Source::new(name, c, s).map_err(RunError::Setup)?,
                opts,
                shutdown,
            )
            .await
        }
    }
}
