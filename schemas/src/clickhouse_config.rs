//! ClickHouse connection settings shared by `migrate`, the pipeline and the query commands.

use serde::{Deserialize, Serialize};

/// `[clickhouse]` section of the config file.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP endpoint of the server.
    #[serde(default = "default_url")]
    pub url: String,
    /// Database holding the socialcrm tables.
    #[serde(default = "default_database")]
    pub database: String,
    /// User name.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password (use `${VAR}` interpolation; never logged).
    #[serde(default)]
    pub password: String,
    /// LZ4-compress inserts (supported by 18.16 and current releases).
    #[serde(default = "default_true")]
    pub compression: bool,
}

impl std::fmt::Debug for ClickHouseConfig {
    // the password never reaches logs or error messages
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("compression", &self.compression)
            .finish()
    }
}

fn default_url() -> String {
    "http://127.0.0.1:8123".into()
}
fn default_database() -> String {
    "crm".into()
}
fn default_user() -> String {
    "default".into()
}
fn default_true() -> bool {
    true
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: default_url(),
            database: default_database(),
            user: default_user(),
            password: String::new(),
            compression: true,
        }
    }
}

impl ClickHouseConfig {
    /// A client with the database selected. Row validation is off: ClickHouse 18.16
    /// does not support the `RowBinaryWithNamesAndTypes` format it relies on.
    pub fn client(&self) -> clickhouse::Client {
        self.client_without_database()
            .with_database(self.database.clone())
    }

    /// A client without a default database (for `CREATE DATABASE`).
    pub fn client_without_database(&self) -> clickhouse::Client {
        let mut c = clickhouse::Client::default()
            .with_url(self.url.clone())
            .with_user(self.user.clone())
            .with_validation(false)
            .with_compression(if self.compression {
                clickhouse::Compression::Lz4
            } else {
                clickhouse::Compression::None
            });
        if !self.password.is_empty() {
            c = c.with_password(self.password.clone());
        }
        c
    }

    /// `SELECT 1`: fails with the server's answer when ClickHouse is not usable.
    pub async fn health_check(&self) -> Result<(), clickhouse::error::Error> {
        let one: u8 = self
            .client_without_database()
            .query_raw("SELECT toUInt8(1)")
            .fetch_one()
            .await?;
        debug_assert_eq!(one, 1);
        Ok(())
    }
}
