//! `socialcrm identity explain|unlink|split|simulate|rebuild` (docs/identity.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::json;
use socialcrm_pipeline::config::IdentityConfig;
use socialcrm_pipeline::identity::{Graph, IdRecord};
use socialcrm_pipeline::rows::{IdentityRow, LedgerRow};
use socialcrm_schemas::messages::{CommandAction, IdentityCommand};
use socialcrm_schemas::{CanonicalEvent, Identifier, Normalizer, SCHEMA_VERSION};

use crate::commands::profile::get_profile;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum IdentityCommandArgs {
    /// A profile's identifiers and the chain of links, merges, refusals, unlinks
    /// and splits (with their events and times) that made it.
    Explain {
        /// Any identifier of the customer, `type:value`.
        identifier: String,
        #[arg(long)]
        json: bool,
    },
    /// Detach an identifier from its profile for good: it keeps its own events
    /// and never links to the rest of that profile again, even on replay.
    Unlink {
        /// The identifier, `type:value`.
        identifier: String,
        /// A note for the ledger (ticket, reason).
        #[arg(long, default_value = "")]
        note: String,
        /// How long to wait for the pipeline to apply it (0 = do not wait).
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
    },
    /// Split identifiers off a profile into a profile of their own, for good.
    Split {
        /// The profile.
        customer_id: String,
        /// The identifiers that leave, `type:value`.
        #[arg(required = true)]
        identifiers: Vec<String>,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
    },
    /// Dry run of other rules over the recorded links: how many profiles would
    /// merge, split or be flagged, with examples. Changes nothing.
    Simulate {
        /// A config file whose `[identity]` section holds the rules to try.
        #[arg(long = "rules")]
        rules: std::path::PathBuf,
        /// Examples to show per kind of change.
        #[arg(long, default_value_t = 3)]
        examples: usize,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the identifier → customer mapping from the ledger alone and
    /// compare it with crm.identities (exit status 1 when they differ).
    Rebuild {
        /// Also write the rebuilt mapping to crm.identities (newer versions win).
        #[arg(long)]
        write: bool,
        #[arg(long)]
        json: bool,
    },
}

fn time(secs: u32) -> String {
    DateTime::from_timestamp(i64::from(secs), 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn normalized(cfg: &Config, identifier: &str) -> Result<Identifier> {
    let (t, v) = identifier.split_once(':').with_context(|| {
        format!("`{identifier}`: write identifiers as type:value, e.g. email:ann@example.com")
    })?;
    let normalizer = Normalizer::new(Some(&cfg.identity.default_phone_region))?;
    // the stored form: hashed when [privacy] hashes the type
    socialcrm_schemas::privacy::lookup_identifier(cfg.privacy.hasher().as_ref(), &normalizer, t, v)
        .map_err(|e| anyhow::anyhow!("`{identifier}`: {e}"))
}

pub async fn run(cfg: &Config, cmd: IdentityCommandArgs) -> Result<()> {
    match cmd {
        IdentityCommandArgs::Explain { identifier, json } => explain(cfg, &identifier, json).await,
        IdentityCommandArgs::Unlink {
            identifier,
            note,
            wait_secs,
        } => {
            let id = normalized(cfg, &identifier)?;
            let Some(p) = get_profile(cfg, &identifier).await? else {
                bail!("no profile has the identifier {identifier}");
            };
            let others = profile_ids(&p)
                .into_iter()
                .filter(|o| *o != id)
                .collect::<Vec<_>>();
            if others.is_empty() {
                bail!(
                    "{} is the only identifier of {}: nothing to unlink",
                    id.key(),
                    p.customer_id
                );
            }
            let cmd = command(
                CommandAction::Unlink,
                &p.customer_id,
                vec![id],
                others,
                note,
            );
            send_and_wait(cfg, &cmd, wait_secs).await
        }
        IdentityCommandArgs::Split {
            customer_id,
            identifiers,
            note,
            wait_secs,
        } => {
            let leave: Vec<Identifier> = identifiers
                .iter()
                .map(|i| normalized(cfg, i))
                .collect::<Result<_>>()?;
            let p: Option<socialcrm_pipeline::rows::ProfileRow> = cfg
                .clickhouse
                .client()
                .query("SELECT ?fields FROM profiles FINAL WHERE customer_id = ? AND is_active = 1")
                .bind(&customer_id)
                .fetch_optional()
                .await
                .context("querying ClickHouse profiles")?;
            let Some(p) = p else {
                bail!("{customer_id} is not a live profile");
            };
            let all = profile_ids(&p);
            if let Some(x) = leave.iter().find(|i| !all.contains(i)) {
                bail!("{} is not an identifier of {customer_id}", x.key());
            }
            let others: Vec<Identifier> = all.into_iter().filter(|i| !leave.contains(i)).collect();
            if others.is_empty() {
                bail!("a split must leave at least one identifier on {customer_id}");
            }
            let cmd = command(CommandAction::Split, &customer_id, leave, others, note);
            send_and_wait(cfg, &cmd, wait_secs).await
        }
        IdentityCommandArgs::Simulate {
            rules,
            examples,
            json,
        } => simulate(cfg, &rules, examples, json).await,
        IdentityCommandArgs::Rebuild { write, json } => rebuild(cfg, write, json).await,
    }
}

fn profile_ids(p: &socialcrm_pipeline::rows::ProfileRow) -> Vec<Identifier> {
    identifiers(&p.identifier_types, &p.identifier_values)
}

/// Identifiers from ClickHouse's parallel type/value arrays.
fn identifiers(types: &[String], values: &[String]) -> Vec<Identifier> {
    types
        .iter()
        .zip(values)
        .map(|(t, v)| Identifier {
            id_type: t.clone(),
            value: v.clone(),
        })
        .collect()
}

/// `cmd-<UTC time>-<random>`: sortable and unique enough for an operator's commands.
pub(crate) fn new_command_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!(
        "cmd-{}-{:08x}",
        Utc::now().format("%Y%m%dT%H%M%S"),
        h.finish() as u32
    )
}

fn command(
    action: CommandAction,
    customer_id: &str,
    identifiers: Vec<Identifier>,
    others: Vec<Identifier>,
    note: String,
) -> IdentityCommand {
    IdentityCommand {
        schema_version: SCHEMA_VERSION,
        command_id: new_command_id(),
        action,
        customer_id: customer_id.to_string(),
        identifiers,
        others,
        note,
        requested_at: Utc::now(),
    }
}

async fn ledger_where(cfg: &Config, cond: &str, bind: &[&str]) -> Result<Vec<LedgerRow>> {
    let mut q = cfg.clickhouse.client().query(&format!(
        "SELECT ?fields FROM identity_ledger FINAL WHERE {cond} ORDER BY version, seq, entry_id"
    ));
    for b in bind {
        q = q.bind(*b);
    }
    q.fetch_all()
        .await
        .context("querying ClickHouse identity_ledger")
}

async fn send_and_wait(cfg: &Config, cmd: &IdentityCommand, wait_secs: u64) -> Result<()> {
    let payload = serde_json::to_vec(cmd)?;
    crate::privacy::send(cfg, &cfg.kafka.topics.commands, &cmd.command_id, &payload)
        .await
        .context("sending the command")?;
    println!(
        "command {} ({:?} on {}) sent to {}",
        cmd.command_id, cmd.action, cmd.customer_id, cfg.kafka.topics.commands
    );
    if wait_secs == 0 {
        return Ok(());
    }
    let event_id = format!("command:{}", cmd.command_id);
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let entries = ledger_where(cfg, "event_id = ?", &[&event_id]).await?;
        if !entries.is_empty() {
            println!("applied by the pipeline:");
            for e in &entries {
                print_entry(e);
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the pipeline did not apply command {} within {wait_secs} s; it stays queued on {} and applies when the pipeline runs (check the pipeline's log, or crm.dlq if it was refused)",
                cmd.command_id,
                cfg.kafka.topics.commands
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_entry(e: &LedgerRow) {
    let id = if e.id_type.is_empty() {
        String::new()
    } else {
        format!("{}:{}", e.id_type, e.id_value)
    };
    let what = match e.action.as_str() {
        "create" => format!("{id} created {}", e.customer_id),
        "link" => format!("{id} linked to {}", e.customer_id),
        "merge" => format!("{} merged into {}", e.merged_customer_id, e.customer_id),
        "reject" => format!("{id} refused ({}: {})", e.rule, e.reason),
        "candidate" => format!("{id} claimed, not linked ({})", e.reason),
        "unlink" => format!("{id} unlinked ({})", e.reason),
        "split" => format!(
            "{id} moved from {} to {}",
            e.merged_customer_id, e.customer_id
        ),
        other => format!("{other} {id} {}", e.customer_id),
    };
    println!("  {}  {:<7} {what}  [{}]", time(e.at), e.action, e.event_id);
}

async fn explain(cfg: &Config, identifier: &str, as_json: bool) -> Result<()> {
    let Some(p) = get_profile(cfg, identifier).await? else {
        bail!("no profile has the identifier {identifier}");
    };
    let ids = profile_ids(&p);
    let entries = crate::api::queries(cfg)?
        .ledger(&p)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if as_json {
        let out = json!({
            "customer_id": p.customer_id,
            "identifiers": ids,
            "merged_from": p.merged_from,
            "flags": p.flags,
            "ledger": entries,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{}  ({} identifiers)", p.customer_id, ids.len());
    for i in &ids {
        println!("  {}", i.key());
    }
    if !p.flags.is_empty() {
        println!("flagged for review: {}", p.flags.join(", "));
    }
    println!("how they were joined (oldest first):");
    for e in &entries {
        print_entry(e);
    }
    Ok(())
}

/// The recorded links: every distinct identifier set of the stored events, with
/// its earliest event.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct RecordedLink {
    identifier_types: Vec<String>,
    identifier_values: Vec<String>,
    at: u32,
    event_id: String,
}

#[derive(Debug, Serialize)]
struct Simulation {
    links: usize,
    profiles_now: usize,
    profiles_new: usize,
    /// Profiles of the new rules that join several current profiles.
    merges: usize,
    /// Current profiles that the new rules divide.
    splits: usize,
    flagged_now: usize,
    flagged_new: usize,
    /// Identifiers the new rules block entirely.
    newly_blocked: usize,
    merge_examples: Vec<Vec<String>>,
    split_examples: Vec<Vec<Vec<String>>>,
    flag_examples: Vec<(Vec<String>, Vec<String>)>,
}

fn resolve_all(cfg: &IdentityConfig, links: &[RecordedLink]) -> Graph {
    let mut g = Graph::new(cfg);
    for l in links {
        let ev = CanonicalEvent::bare(
            l.event_id.clone(),
            "simulate",
            "link",
            DateTime::from_timestamp(i64::from(l.at), 0).unwrap_or_default(),
            identifiers(&l.identifier_types, &l.identifier_values),
        );
        // an event whose identifiers are all blocked links nothing
        let _ = g.process(&ev, &[]);
    }
    g
}

async fn simulate(
    cfg: &Config,
    rules_file: &std::path::Path,
    examples: usize,
    as_json: bool,
) -> Result<()> {
    let new_cfg = Config::load(Some(rules_file))?.identity;
    let links: Vec<RecordedLink> = cfg
        .clickhouse
        .client()
        .query(
            "SELECT identifier_types, identifier_values, toUInt32(min(occurred_at)) AS at, \
             argMin(event_id, occurred_at) AS event_id \
             FROM events FINAL GROUP BY identifier_types, identifier_values",
        )
        .fetch_all()
        .await
        .context("reading the recorded links from ClickHouse events")?;
    let now = resolve_all(&cfg.identity, &links);
    let new = resolve_all(&new_cfg, &links);
    let part_now: HashMap<String, usize> = index(&now.partition());
    let parts_new = new.partition();
    let parts_cur = now.partition();
    let part_new: HashMap<String, usize> = index(&parts_new);
    let mut sim = Simulation {
        links: links.len(),
        profiles_now: parts_cur.len(),
        profiles_new: parts_new.len(),
        merges: 0,
        splits: 0,
        flagged_now: now
            .profiles
            .values()
            .filter(|p| p.is_active() && !p.flags.is_empty())
            .count(),
        flagged_new: new
            .profiles
            .values()
            .filter(|p| p.is_active() && !p.flags.is_empty())
            .count(),
        newly_blocked: part_now
            .keys()
            .filter(|k| !part_new.contains_key(*k))
            .count(),
        merge_examples: Vec::new(),
        split_examples: Vec::new(),
        flag_examples: Vec::new(),
    };
    for p in &parts_new {
        let from: BTreeSet<usize> = p.iter().filter_map(|k| part_now.get(k).copied()).collect();
        if from.len() > 1 {
            sim.merges += 1;
            if sim.merge_examples.len() < examples {
                sim.merge_examples.push(p.iter().cloned().collect());
            }
        }
    }
    for p in &parts_cur {
        let into: BTreeMap<usize, Vec<String>> = p.iter().fold(BTreeMap::new(), |mut m, k| {
            if let Some(i) = part_new.get(k) {
                m.entry(*i).or_insert_with(Vec::new).push(k.clone());
            }
            m
        });
        if into.len() > 1 {
            sim.splits += 1;
            if sim.split_examples.len() < examples {
                sim.split_examples.push(into.into_values().collect());
            }
        }
    }
    for p in new
        .profiles
        .values()
        .filter(|p| p.is_active() && !p.flags.is_empty())
    {
        if sim.flag_examples.len() >= examples {
            break;
        }
        sim.flag_examples.push((
            p.identifiers.iter().map(Identifier::key).collect(),
            p.flags.iter().cloned().collect(),
        ));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&sim)?);
        return Ok(());
    }
    println!(
        "{} recorded links; profiles: {} with the current rules, {} with {}",
        sim.links,
        sim.profiles_now,
        sim.profiles_new,
        rules_file.display()
    );
    println!(
        "  merges:   {} new profiles would join several current ones",
        sim.merges
    );
    for e in &sim.merge_examples {
        println!("            e.g. {}", e.join(" + "));
    }
    println!(
        "  splits:   {} current profiles would be divided",
        sim.splits
    );
    for e in &sim.split_examples {
        let sides: Vec<String> = e.iter().map(|s| format!("[{}]", s.join(", "))).collect();
        println!("            e.g. {}", sides.join(" | "));
    }
    println!(
        "  flagged:  {} profiles (now {})",
        sim.flagged_new, sim.flagged_now
    );
    for (ids, flags) in &sim.flag_examples {
        println!("            e.g. {} ({})", ids.join(", "), flags.join(", "));
    }
    println!(
        "  blocked:  {} identifiers would no longer link",
        sim.newly_blocked
    );
    println!("nothing was changed (unlinks and splits are not part of the simulation)");
    Ok(())
}

fn index(parts: &[BTreeSet<String>]) -> HashMap<String, usize> {
    parts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.iter().map(move |k| (k.clone(), i)))
        .collect()
}

/// Folds the ledger in (version, seq) order into identifier → customer.
pub fn fold_ledger(entries: &[LedgerRow]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut members: HashMap<String, BTreeSet<String>> = HashMap::new();
    for e in entries {
        let key = format!("{}:{}", e.id_type, e.id_value);
        match e.action.as_str() {
            "create" | "link" | "split" | "unlink" => {
                if let Some(old) = map.insert(key.clone(), e.customer_id.clone()) {
                    if let Some(m) = members.get_mut(&old) {
                        m.remove(&key);
                    }
                }
                members
                    .entry(e.customer_id.clone())
                    .or_default()
                    .insert(key);
            }
            "merge" => {
                let moved = members.remove(&e.merged_customer_id).unwrap_or_default();
                for k in &moved {
                    map.insert(k.clone(), e.customer_id.clone());
                }
                members
                    .entry(e.customer_id.clone())
                    .or_default()
                    .extend(moved);
            }
            _ => {}
        }
    }
    map
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Mapping {
    id_type: String,
    id_value: String,
    customer_id: String,
}

async fn rebuild(cfg: &Config, write: bool, as_json: bool) -> Result<()> {
    let entries = ledger_where(cfg, "1", &[]).await?;
    let rebuilt = fold_ledger(&entries);
    let current: Vec<Mapping> = cfg
        .clickhouse
        .client()
        .query("SELECT id_type, id_value, customer_id FROM identities FINAL WHERE is_active = 1")
        .fetch_all()
        .await
        .context("querying ClickHouse identities")?;
    let current: BTreeMap<String, String> = current
        .into_iter()
        .map(|m| (format!("{}:{}", m.id_type, m.id_value), m.customer_id))
        .collect();
    let mut differ: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for k in rebuilt
        .keys()
        .chain(current.keys())
        .collect::<BTreeSet<_>>()
    {
        let (a, b) = (rebuilt.get(k), current.get(k));
        if a != b {
            differ.push((k.clone(), a.cloned(), b.cloned()));
        }
    }
    if write && !differ.is_empty() {
        write_mapping(cfg, &entries, &differ).await?;
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ledger_entries": entries.len(),
                "identifiers": rebuilt.len(),
                "identical": differ.is_empty(),
                "differences": differ.iter().take(100).collect::<Vec<_>>(),
                "written": write,
            }))?
        );
    } else {
        println!(
            "rebuilt {} identifiers from {} ledger entries",
            rebuilt.len(),
            entries.len()
        );
        if differ.is_empty() {
            println!("identical to crm.identities");
        } else {
            println!("{} identifiers differ from crm.identities:", differ.len());
            for (k, a, b) in differ.iter().take(20) {
                println!(
                    "  {k}: ledger {} / identities {}",
                    a.as_deref().unwrap_or("–"),
                    b.as_deref().unwrap_or("–")
                );
            }
        }
        if write {
            println!("written to crm.identities");
        }
    }
    if !differ.is_empty() && !write {
        std::process::exit(1);
    }
    Ok(())
}

/// Writes the ledger's answer for the identifiers that differ (newer version;
/// an identifier the ledger does not know is marked inactive).
async fn write_mapping(
    cfg: &Config,
    entries: &[LedgerRow],
    differ: &[(String, Option<String>, Option<String>)],
) -> Result<()> {
    let client = cfg.clickhouse.client();
    let version: u64 = client
        .query("SELECT max(version) + 1 FROM identities")
        .fetch_one()
        .await
        .context("querying ClickHouse identities")?;
    let mut born: HashMap<String, u32> = HashMap::new();
    for e in entries {
        let k = format!("{}:{}", e.id_type, e.id_value);
        let t = born.entry(k).or_insert(e.at);
        *t = (*t).min(e.at);
    }
    let now = Utc::now();
    let rows: Vec<IdentityRow> = differ
        .iter()
        .map(|(k, rebuilt, _)| {
            let rec = rebuilt.as_ref().map(|c| IdRecord {
                customer_id: c.clone(),
                first_seen: born
                    .get(k)
                    .and_then(|t| DateTime::from_timestamp(i64::from(*t), 0))
                    .unwrap_or(now),
                first_event: 0,
                links: Vec::new(),
            });
            IdentityRow::new(k, rec.as_ref(), version, now)
        })
        .collect();
    let mut insert = client.insert::<IdentityRow>("identities").await?;
    for r in &rows {
        insert.write(r).await?;
    }
    insert.end().await.context("writing crm.identities")?;
    Ok(())
}
