//! ClickHouse migrations (DESIGN §3.4): SQL files in `schemas/migrations/`, applied in
//! order and recorded in `<db>.schema_migrations`, so a second run does nothing.
//! `{db}` in a file stands for the configured database name.

use sha2::{Digest, Sha256};

use crate::clickhouse_config::ClickHouseConfig;

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// All migrations, in order. Never edit an applied one: add a new file.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "identities",
        sql: include_str!("../migrations/0002_identities.sql"),
    },
    Migration {
        version: 3,
        name: "identity_ledger",
        sql: include_str!("../migrations/0003_identity_ledger.sql"),
    },
    Migration {
        version: 4,
        name: "profiles",
        sql: include_str!("../migrations/0004_profiles.sql"),
    },
    Migration {
        version: 5,
        name: "views",
        sql: include_str!("../migrations/0005_views.sql"),
    },
    Migration {
        version: 6,
        name: "scores",
        sql: include_str!("../migrations/0006_scores.sql"),
    },
    Migration {
        version: 7,
        name: "identity_rules",
        sql: include_str!("../migrations/0007_identity_rules.sql"),
    },
    Migration {
        version: 8,
        name: "surfaces",
        sql: include_str!("../migrations/0008_surfaces.sql"),
    },
    Migration {
        version: 9,
        name: "marketer_views",
        sql: include_str!("../migrations/0009_marketer_views.sql"),
    },
    Migration {
        version: 10,
        name: "privacy",
        sql: include_str!("../migrations/0010_privacy.sql"),
    },
    Migration {
        version: 11,
        name: "event_moves",
        sql: include_str!("../migrations/0011_event_moves.sql"),
    },
    Migration {
        version: 12,
        name: "score_models",
        sql: include_str!("../migrations/0012_score_models.sql"),
    },
    Migration {
        version: 13,
        name: "leaderboards",
        sql: include_str!("../migrations/0013_leaderboards.sql"),
    },
    Migration {
        version: 14,
        name: "suppression_lifts",
        sql: include_str!("../migrations/0014_suppression_lifts.sql"),
    },
];

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("invalid database name `{0}`: use [A-Za-z0-9_]")]
    BadDatabase(String),
    #[error("migration {version} ({name}) failed: {source}")]
    Apply {
        version: u32,
        name: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("migration {version} was applied with a different checksum: migration files must not change once applied")]
    Checksum { version: u32 },
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

impl Migration {
    /// The statements of this migration for database `db`.
    pub fn statements(&self, db: &str) -> Vec<String> {
        split_statements(self.sql)
            .into_iter()
            .map(|s| s.replace("{db}", db))
            .collect()
    }

    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// Splits a file on `;` at line ends, dropping comment-only chunks.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if trimmed.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').trim().to_string();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            cur.clear();
        }
    }
    let stmt = cur.trim().to_string();
    if !stmt.is_empty() {
        out.push(stmt);
    }
    out
}

/// `(table, column)` of an `ALTER TABLE <db>.<table> ADD COLUMN <column> ...` statement.
pub fn added_column(stmt: &str) -> Option<(&str, &str)> {
    let mut w = stmt.split_whitespace();
    let (Some("ALTER"), Some("TABLE"), Some(target), Some("ADD"), Some("COLUMN"), Some(col)) =
        (w.next(), w.next(), w.next(), w.next(), w.next(), w.next())
    else {
        return None;
    };
    let table = target.split_once('.').map_or(target, |(_, t)| t);
    Some((table, col))
}

/// Result of a `migrate` run.
#[derive(Debug, Default)]
pub struct MigrateReport {
    pub applied: Vec<u32>,
    pub already: Vec<u32>,
}

#[derive(clickhouse::Row, serde::Deserialize, serde::Serialize)]
struct AppliedRow {
    version: u32,
    name: String,
    checksum: String,
    applied_at: u32,
}

/// Applies every migration not yet recorded. Idempotent.
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<MigrateReport, MigrationError> {
    let db = &cfg.database;
    if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(MigrationError::BadDatabase(db.clone()));
    }
    let client = cfg.client_without_database();
    client
        .query_raw(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .execute()
        .await?;
    client
        .query_raw(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, checksum String, applied_at DateTime) ENGINE = MergeTree ORDER BY version"
        ))
        .execute()
        .await?;
    let applied: Vec<AppliedRow> = client
        .query_raw(&format!(
            "SELECT version, name, checksum, toUInt32(applied_at) AS applied_at FROM {db}.schema_migrations ORDER BY version"
        ))
        .fetch_all()
        .await?;
    let mut report = MigrateReport::default();
    for m in MIGRATIONS {
        if let Some(row) = applied.iter().find(|r| r.version == m.version) {
            if row.checksum != m.checksum() {
                return Err(MigrationError::Checksum { version: m.version });
            }
            report.already.push(m.version);
            continue;
        }
        for stmt in m.statements(db) {
            // 18.16 has no `ADD COLUMN IF NOT EXISTS`: skip a column a migration
            // interrupted half-way already added, so it can be re-run
            if let Some((table, column)) = added_column(&stmt) {
                let n: u64 = client
                    .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
                    .bind(db)
                    .bind(table)
                    .bind(column)
                    .fetch_one()
                    .await?;
                if n > 0 {
                    continue;
                }
            }
            client
                .query_raw(&stmt)
                .execute()
                .await
                .map_err(|source| MigrationError::Apply {
                    version: m.version,
                    name: m.name,
                    source,
                })?;
        }
        let mut insert = cfg
            .client()
            .insert::<AppliedRow>("schema_migrations")
            .await?;
        insert
            .write(&AppliedRow {
                version: m.version,
                name: m.name.to_string(),
                checksum: m.checksum(),
                applied_at: chrono::Utc::now().timestamp().clamp(0, u32::MAX as i64) as u32,
            })
            .await?;
        insert.end().await?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        report.applied.push(m.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_columns_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE crm.events ADD COLUMN primary_id String DEFAULT ''"),
            Some(("events", "primary_id"))
        );
        assert_eq!(
            added_column("CREATE TABLE IF NOT EXISTS crm.x (a String)"),
            None
        );
    }

    #[test]
    fn migrations_are_ordered_and_split() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            let stmts = m.statements("crm_x");
            assert!(!stmts.is_empty());
            for s in stmts {
                assert!(!s.contains("{db}"));
                assert!(!s.ends_with(';'));
            }
        }
        assert_eq!(MIGRATIONS[1].statements("d").len(), 2);
        assert_eq!(MIGRATIONS[4].statements("d").len(), 3);
    }
}
