//! Persisted cursors of one connector instance: a small JSON file in the state
//! directory (`<state_dir>/<instance>.cursors.json`), replaced atomically (write a
//! temporary file, fsync, rename, fsync the directory) after every page that Kafka
//! acknowledged. A lock file keeps two processes from running one instance.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use the connector state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connector instance `{instance}` is already running (lock {path} is held by another process)")]
    Locked { instance: String, path: PathBuf },
    #[error("connector state file {path} is not readable: {message}; move it away to start over (the next run re-reads history, replays are harmless)")]
    Corrupt { path: PathBuf, message: String },
    #[error("connector state file {path} belongs to a `{found}` connector, not `{expected}`; use another instance name or state_dir")]
    WrongKind {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamState {
    /// The source's cursor, opaque to the runtime.
    pub cursor: Value,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileState {
    format: u32,
    instance: String,
    kind: String,
    streams: BTreeMap<String, StreamState>,
}

/// The cursors of one instance, and the lock that makes it the only writer.
pub struct CursorStore {
    path: PathBuf,
    state: FileState,
    _lock: File,
}

impl CursorStore {
    /// Opens (or creates) the state of `instance`, a connector of type `kind`.
    pub fn open(dir: &Path, instance: &str, kind: &str) -> Result<CursorStore, StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(format!("{instance}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    instance: instance.to_string(),
                    path: lock_path,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let path = dir.join(format!("{instance}.cursors.json"));
        let state = match std::fs::read(&path) {
            Ok(raw) => {
                let st: FileState =
                    serde_json::from_slice(&raw).map_err(|e| StateError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                if st.format != FORMAT {
                    return Err(StateError::Corrupt {
                        path,
                        message: format!("format {} (this version reads {FORMAT})", st.format),
                    });
                }
                if st.kind != kind {
                    return Err(StateError::WrongKind {
                        path,
                        found: st.kind,
                        expected: kind.to_string(),
                    });
                }
                st
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState {
                format: FORMAT,
                instance: instance.to_string(),
                kind: kind.to_string(),
                streams: BTreeMap::new(),
            },
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(CursorStore {
            path,
            state,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored cursor of `stream`, if any.
    pub fn get(&self, stream: &str) -> Option<&StreamState> {
        self.state.streams.get(stream)
    }

    /// Stores the cursor of `stream` durably before returning.
    pub fn set(&mut self, stream: &str, cursor: Value) -> Result<(), StateError> {
        self.state.streams.insert(
            stream.to_string(),
            StreamState {
                cursor,
                updated_at: Utc::now(),
            },
        );
        self.persist()
    }

    fn persist(&self) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&self.state).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(&body).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_survive_reopen_and_one_writer_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = CursorStore::open(dir.path(), "shop_eu", "shopify").expect("open");
            assert!(s.get("orders").is_none());
            s.set("orders", serde_json::json!({"after": "abc"}))
                .expect("set");
            let again = CursorStore::open(dir.path(), "shop_eu", "shopify");
            assert!(matches!(again, Err(StateError::Locked { .. })));
        }
        let s = CursorStore::open(dir.path(), "shop_eu", "shopify").expect("reopen");
        assert_eq!(
            s.get("orders").map(|st| st.cursor.clone()),
            Some(serde_json::json!({"after": "abc"}))
        );
        drop(s);
        let e = CursorStore::open(dir.path(), "shop_eu", "woocommerce");
        assert!(matches!(e, Err(StateError::WrongKind { .. })));
        std::fs::write(dir.path().join("bad.cursors.json"), b"{not json").expect("write");
        let e = CursorStore::open(dir.path(), "bad", "x")
            .err()
            .expect("corrupt");
        assert!(e.to_string().contains("move it away"), "{e}");
    }
}
