//! No secret in logs, errors or the DLQ (docs/privacy.md, "Secrets in logs"): the
//! secrets a [`World`]'s config holds, the forms under which each could leak (as
//! written, base64 at any alignment, URL-encoded, JSON-escaped), and scans of text
//! for them. Every `World` scans its own log files on drop (`World::drop`), so each
//! end-to-end test checks the processes it ran.

use std::path::{Path, PathBuf};

use super::World;

/// Shorter values are not treated as secrets: too likely to occur by chance.
pub const MIN_SECRET_CHARS: usize = 8;

/// One configured secret: where it is in the config, and its value.
#[derive(Debug, Clone)]
pub struct Secret {
    pub key: String,
    pub value: String,
}

/// A secret found where it must not be.
#[derive(Debug)]
pub struct Leak {
    pub place: String,
    pub line: usize,
    pub key: String,
    pub form: &'static str,
}

impl std::fmt::Display for Leak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: the secret `{}` ({})",
            self.place, self.line, self.key, self.form
        )
    }
}

/// True for config keys that hold secrets: passwords, tokens, secrets, salts,
/// keys (`key`, `*_key`, `write_keys`).
fn is_secret_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "token", "secret", "salt"]
        .iter()
        .any(|w| n.contains(w))
        || n == "key"
        || n.ends_with("_key")
        || n.ends_with(".key")
        || n == "write_keys"
}

/// `${VAR}` / `${VAR:-default}` as the binary resolves them, from this process's
/// environment (which spawned processes inherit); `None` when unresolvable.
fn resolve(value: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let body = &rest[i + 2..];
        let end = body.find('}')?;
        let (name, default) = match body[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&body[..end], None),
        };
        out.push_str(&std::env::var(name).ok().or(default.map(str::to_string))?);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Some(out.replace("$$", "$"))
}

fn collect(path: &str, v: &toml::Value, secret: bool, out: &mut Vec<Secret>) {
    match v {
        toml::Value::String(s) if secret => {
            if let Some(value) = resolve(s).filter(|r| r.chars().count() >= MIN_SECRET_CHARS) {
                out.push(Secret {
                    key: path.to_string(),
                    value,
                });
            }
        }
        toml::Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                collect(&format!("{path}[{i}]"), item, secret, out);
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                collect(&p, item, is_secret_key(k), out);
            }
        }
        _ => {}
    }
}

/// The secrets of a config file's text.
pub fn config_secrets(toml_text: &str) -> Vec<Secret> {
    let mut out = Vec::new();
    if let Ok(doc) = toml_text.parse::<toml::Table>() {
        collect("", &toml::Value::Table(doc), false, &mut out);
    }
    out
}

fn b64(bytes: &[u8], url_safe: bool) -> String {
    use base64::Engine;
    if url_safe {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    } else {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    }
}

fn percent(s: &str, lower: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The forms under which `secret` could appear in text. Base64 is matched at every
/// byte alignment (the secret may be inside a longer encoded value, such as an
/// HTTP Basic header `key:`), on the characters that depend on the secret alone.
pub fn leak_forms(secret: &str) -> Vec<(&'static str, String)> {
    let mut forms = vec![("as written", secret.to_string())];
    let b = secret.as_bytes();
    for skip in 0..3.min(b.len()) {
        let whole = (b.len() - skip) / 3 * 3;
        let part = &b[skip..skip + whole];
        for (name, url_safe) in [("base64", false), ("base64url", true)] {
            let enc = b64(part, url_safe);
            if enc.len() >= MIN_SECRET_CHARS {
                forms.push((name, enc));
            }
        }
    }
    forms.push(("URL-encoded", percent(secret, false)));
    forms.push(("URL-encoded", percent(secret, true)));
    forms.push(("form-encoded", percent(secret, false).replace("%20", "+")));
    if let Ok(j) = serde_json::to_string(secret) {
        forms.push(("JSON-escaped", j.trim_matches('"').to_string()));
    }
    forms.push((
        "debug-escaped",
        format!("{secret:?}").trim_matches('"').to_string(),
    ));
    // one entry per distinct text, named by its first (plainest) form
    let mut seen = std::collections::HashSet::new();
    forms.retain(|(_, v)| seen.insert(v.clone()));
    forms
}

/// Every line of `text` (named `place`) that holds a form of a secret.
pub fn scan_text(place: &str, text: &str, secrets: &[Secret]) -> Vec<Leak> {
    let forms: Vec<(&Secret, &'static str, String)> = secrets
        .iter()
        .flat_map(|s| {
            leak_forms(&s.value)
                .into_iter()
                .map(move |(f, v)| (s, f, v))
        })
        .collect();
    let mut leaks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for (s, form, v) in &forms {
            if line.contains(v.as_str()) {
                leaks.push(Leak {
                    place: place.to_string(),
                    line: i + 1,
                    key: s.key.clone(),
                    form,
                });
                break;
            }
        }
    }
    leaks
}

/// [`scan_text`] over files.
pub fn scan_files(files: &[PathBuf], secrets: &[Secret]) -> Vec<Leak> {
    files
        .iter()
        .flat_map(|f| {
            let text = String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).into_owned();
            scan_text(&f.display().to_string(), &text, secrets)
        })
        .collect()
}

/// Fails with every leak, one per line.
pub fn assert_no_leaks(what: &str, leaks: &[Leak]) {
    assert!(
        leaks.is_empty(),
        "{what}: configured secrets leaked:\n{}",
        leaks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

impl World {
    /// The secrets this world's config holds now (read from the file).
    pub fn secrets(&self) -> Vec<Secret> {
        config_secrets(&std::fs::read_to_string(&self.config).unwrap_or_default())
    }

    /// The log files of the processes this world ran (`*.log` in its directory).
    pub fn log_files(&self) -> Vec<PathBuf> {
        log_files_in(self.dir.path())
    }

    /// Fails naming file and line if a log file holds a configured secret.
    pub fn assert_no_secret_in_logs(&self) {
        let secrets = self.secrets();
        assert_no_leaks(
            &format!("logs of world {}", self.name),
            &scan_files(&self.log_files(), &secrets),
        );
    }

    /// Fails naming `place` and line if `text` holds a configured secret.
    pub fn assert_no_secret_in(&self, place: &str, text: &str) {
        assert_no_leaks(place, &scan_text(place, text, &self.secrets()));
    }
}

fn log_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(log_files_in(&p));
        } else if p.extension().is_some_and(|x| x == "log") {
            out.push(p);
        }
    }
    out.sort();
    out
}
