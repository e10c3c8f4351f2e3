//! woocommerce connector (placeholder: being written).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::config::RuntimeSettings;
use crate::runtime::http::ApiError;
use crate::runtime::{Page, SourceError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

impl Config {
    pub fn validate(&self, _prefix: &str) -> Result<(), String> {
        Ok(())
    }
}

pub struct Source {}

impl Source {
    pub fn new(
        _instance: &str,
        _cfg: Config,
        _settings: &RuntimeSettings,
    ) -> Result<Self, ApiError> {
        Ok(Source {})
    }
}

impl crate::runtime::Source for Source {
    fn kind(&self) -> &'static str {
        "woocommerce"
    }
    fn streams(&self) -> Vec<String> {
        Vec::new()
    }
    fn initial_cursor(&self, _stream: &str, _since: Option<DateTime<Utc>>) -> Value {
        Value::Null
    }
    async fn fetch(&mut self, _stream: &str, _cursor: &Value) -> Result<Page, SourceError> {
        Ok(Page::default())
    }
}
