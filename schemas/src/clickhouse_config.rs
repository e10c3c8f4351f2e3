//! ClickHouse connection settings shared by `migrate`, the pipeline and the query
//! commands: user and password, https with the system's CAs (plus an optional CA
//! file), and a health check whose errors say which setting to look at.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::retry::Retryable;

/// `[clickhouse]` section of the config file.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP endpoint of the server; `https://...` for TLS (server certificate checked
    /// against the system's CAs and `tls_ca_file`).
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
    /// PEM file of CA certificates trusted for an `https://` url, in addition to the
    /// system's (for a server certificate from a private CA). Empty = system CAs only.
    #[serde(default)]
    pub tls_ca_file: String,
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
            .field("tls_ca_file", &self.tls_ca_file)
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
            tls_ca_file: String::new(),
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
        let c = if self.is_https() {
            match self.tls_config() {
                Ok(tls) => https_client(tls),
                Err(e) => {
                    // validate() refused this at start; the CA file changed since
                    tracing::error!(error = %e, "clickhouse tls setup failed; requests will fail");
                    clickhouse::Client::default()
                }
            }
        } else {
            clickhouse::Client::default()
        };
        let mut c = c
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

    fn is_https(&self) -> bool {
        self.url
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
    }

    /// Pure checks (plus reading `tls_ca_file`); errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        let scheme_ok = self.is_https()
            || self
                .url
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("http://"));
        if !scheme_ok {
            return Err(format!(
                "clickhouse.url: `{}` must start with http:// or https://",
                self.url
            ));
        }
        if !self.tls_ca_file.is_empty() && !self.is_https() {
            return Err("clickhouse.tls_ca_file is set but clickhouse.url is not https://".into());
        }
        if self.is_https() {
            self.tls_config()?;
        }
        Ok(())
    }

    /// rustls settings for an https url: the platform verifier (system CAs, as the
    /// connectors' HTTP client uses) plus the certificates of `tls_ca_file`.
    fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let mut extra = Vec::new();
        if !self.tls_ca_file.is_empty() {
            let certs = CertificateDer::pem_file_iter(&self.tls_ca_file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "clickhouse.tls_ca_file: cannot read certificates from `{}`: {e}",
                        self.tls_ca_file
                    )
                })?;
            if certs.is_empty() {
                return Err(format!(
                    "clickhouse.tls_ca_file: `{}` holds no PEM certificate",
                    self.tls_ca_file
                ));
            }
            extra = certs;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
                .map_err(|e| format!("clickhouse.tls_ca_file / system CAs: {e}"))?;
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("clickhouse tls: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth())
    }

    /// `SELECT 1`: fails with the server's answer when ClickHouse is not usable;
    /// the error names `[clickhouse]` and the setting to check.
    pub async fn health_check(&self) -> Result<(), HealthError> {
        let one: u8 = self
            .client_without_database()
            .query_raw("SELECT toUInt8(1)")
            .fetch_one()
            .await
            .map_err(|source| HealthError {
                url: self.url.clone(),
                user: self.user.clone(),
                source,
            })?;
        debug_assert_eq!(one, 1);
        Ok(())
    }
}

/// A client on the hyper client the `clickhouse` crate would build, with rustls for https.
fn https_client(tls: rustls::ClientConfig) -> clickhouse::Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    // below ClickHouse's keep-alive timeout (3 s on 18.16), like the crate's default
    clickhouse::Client::with_http_client(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(2))
            .build(https),
    )
}

/// ClickHouse did not answer `SELECT 1` as the config's user.
#[derive(Debug)]
pub struct HealthError {
    pub url: String,
    pub user: String,
    pub source: clickhouse::error::Error,
}

impl HealthError {
    fn detail(&self) -> String {
        let mut text = self.source.to_string();
        let mut next = std::error::Error::source(&self.source);
        while let Some(e) = next {
            let s = e.to_string();
            if !text.contains(&s) {
                text.push_str(": ");
                text.push_str(&s);
            }
            next = e.source();
        }
        text
    }
}

impl std::fmt::Display for HealthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let detail = self.detail();
        let lower = detail.to_ascii_lowercase();
        let hint = if is_auth_failure(&lower) {
            " (check [clickhouse] user and password)"
        } else if lower.contains("certificate") || lower.contains("tls") {
            " (check [clickhouse] url and tls_ca_file)"
        } else {
            ""
        };
        write!(
            f,
            "[clickhouse] {} as user `{}`: {detail}{hint}",
            self.url, self.user
        )
    }
}

impl std::error::Error for HealthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl Retryable for HealthError {
    fn is_retryable(&self) -> bool {
        // a wrong password or an untrusted certificate does not heal by waiting
        let lower = self.detail().to_ascii_lowercase();
        self.source.is_retryable() && !lower.contains("certificate")
    }
}

/// ClickHouse's answers to bad credentials: 18.16 (codes 192–195) and current
/// releases (516 AUTHENTICATION_FAILED).
pub(crate) fn is_auth_failure(lower: &str) -> bool {
    [
        "code: 192",
        "code: 193",
        "code: 194",
        "code: 195",
        "code: 516",
    ]
    .iter()
    .any(|c| lower.contains(c))
        || lower.contains("authentication failed")
        || lower.contains("wrong password")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str, ca: &str) -> ClickHouseConfig {
        ClickHouseConfig {
            url: url.into(),
            tls_ca_file: ca.into(),
            ..ClickHouseConfig::default()
        }
    }

    #[test]
    fn urls_and_ca_files_are_checked_with_the_field_named() {
        assert!(cfg("http://127.0.0.1:8123", "").validate().is_ok());
        assert!(cfg("HTTPS://ch.example:8443", "").validate().is_ok());
        let e = cfg("127.0.0.1:8123", "").validate().expect_err("no scheme");
        assert!(e.contains("clickhouse.url"), "{e}");
        let e = cfg("http://127.0.0.1:8123", "/etc/ca.pem")
            .validate()
            .expect_err("ca without https");
        assert!(e.contains("clickhouse.tls_ca_file"), "{e}");
        let e = cfg("https://ch.example:8443", "/nonexistent/ca.pem")
            .validate()
            .expect_err("missing file");
        assert!(
            e.contains("clickhouse.tls_ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("ch-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = cfg("https://ch.example:8443", &empty.display().to_string())
            .validate()
            .expect_err("no certificate");
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn auth_failures_are_permanent_and_name_the_section() {
        let e = HealthError {
            url: "http://127.0.0.1:8123".into(),
            user: "crm_secure".into(),
            source: clickhouse::error::Error::BadResponse(
                "Code: 193, e.displayText() = DB::Exception: Wrong password for user crm_secure"
                    .into(),
            ),
        };
        assert!(!e.is_retryable());
        let shown = e.to_string();
        assert!(
            shown.starts_with("[clickhouse] http://127.0.0.1:8123 as user `crm_secure`"),
            "{shown}"
        );
        assert!(
            shown.contains("check [clickhouse] user and password"),
            "{shown}"
        );
        let busy = HealthError {
            source: clickhouse::error::Error::BadResponse(
                "Code: 241, Memory limit exceeded".into(),
            ),
            ..e
        };
        assert!(busy.is_retryable());
    }
}
