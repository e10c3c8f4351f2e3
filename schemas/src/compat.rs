//! The compatibility rule of the topic schemas (docs/consumers.md §6): within a
//! major version (`*.v1.schema.json`) a schema may only change additively. This
//! module compares a schema with a frozen baseline (`schemas/json/baseline/`) and
//! lists every change that is not additive.
//!
//! Additive, allowed within a major version:
//! - a new optional property on a closed object (`additionalProperties: false`);
//! - new values in an `enum`;
//! - a new `allOf` entry `{"if": {"properties": {p: {"const"|"enum": ...}}}, "then": ...}`
//!   whose condition matches only enum values of `p` that the baseline did not have
//!   (a rule for new values never touches messages that were valid before);
//! - changes to annotations (`title`, `description`, `$comment`, `examples`, ...).
//!
//! Everything else is breaking: a property removed (or renamed), a `type`, `const`,
//! `format`, `pattern` or bound changed, added or removed, an `enum` value removed or
//! an `enum` added or dropped, the `required` set changed either way (new properties
//! are optional; an existing property keeps its status), a property added to an open
//! object (it would constrain values that were allowed), `additionalProperties` or
//! `items` changed incompatibly, an existing `allOf` entry or any other combinator
//! (`oneOf`, `anyOf`, `not`, `if`) changed. Local `$ref`s (`#/$defs/...`) are followed,
//! so nested objects and arrays are compared recursively wherever they are defined.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Keywords that do not constrain values: free to change.
const ANNOTATIONS: [&str; 12] = [
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords compared by their own rule; every other keyword must stay equal.
const STRUCTURAL: [&str; 7] = [
    "$ref",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "allOf",
];

/// Deeper nesting than this is reported instead of followed (recursive `$ref`s).
const MAX_DEPTH: usize = 64;

/// Every non-additive change from `baseline` to `current`, one line each, naming
/// the place (`#/properties/identifiers/items/...`). Empty when `current` is a
/// compatible evolution of `baseline`.
pub fn breaking_changes(baseline: &Value, current: &Value) -> Vec<String> {
    let mut cx = Cx {
        base_root: baseline,
        cur_root: current,
        out: Vec::new(),
    };
    cx.node("#", baseline, current, 0);
    cx.out
}

struct Cx<'a> {
    base_root: &'a Value,
    cur_root: &'a Value,
    out: Vec<String>,
}

impl<'a> Cx<'a> {
    fn node(&mut self, path: &str, b: &'a Value, c: &'a Value, depth: usize) {
        if depth > MAX_DEPTH {
            self.out
                .push(format!("{path}: nested deeper than {MAX_DEPTH} levels"));
            return;
        }
        let (Some(b), Some(c)) = (
            self.resolve(self.base_root, path, b, "baseline"),
            self.resolve(self.cur_root, path, c, "current"),
        ) else {
            return;
        };
        let (Some(bo), Some(co)) = (b.as_object(), c.as_object()) else {
            // boolean schemas (`true`/`false`)
            if b != c {
                self.out
                    .push(format!("{path}: schema changed from {b} to {c}"));
            }
            return;
        };
        self.same_keywords(path, bo, co);
        self.enums(path, bo, co);
        self.required(path, bo, co);
        self.properties(path, bo, co, depth);
        for key in ["additionalProperties", "items"] {
            match (bo.get(key), co.get(key)) {
                (None, None) => {}
                (Some(bs), Some(cs)) if bs.is_object() && cs.is_object() => {
                    self.node(&format!("{path}/{key}"), bs, cs, depth + 1)
                }
                (bs, cs) if bs == cs => {}
                (bs, cs) => self.out.push(format!(
                    "{path}: `{key}` changed from {} to {}",
                    show(bs),
                    show(cs)
                )),
            }
        }
        self.all_of(path, bo, co);
    }

    /// Follows local `$ref`s (`#/json/pointer`) from `s` within `root`.
    fn resolve(
        &mut self,
        root: &'a Value,
        path: &str,
        mut s: &'a Value,
        which: &str,
    ) -> Option<&'a Value> {
        for _ in 0..MAX_DEPTH {
            let Some(r) = s.get("$ref").and_then(Value::as_str) else {
                return Some(s);
            };
            match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => s = target,
                None => {
                    self.out.push(format!(
                        "{path}: cannot follow $ref {r:?} in the {which} schema"
                    ));
                    return None;
                }
            }
        }
        self.out.push(format!("{path}: $ref chain too long"));
        None
    }

    /// Every constraint without a rule of its own must be unchanged.
    fn same_keywords(&mut self, path: &str, b: &Map<String, Value>, c: &Map<String, Value>) {
        let keys: BTreeSet<&String> = b.keys().chain(c.keys()).collect();
        for k in keys {
            if ANNOTATIONS.contains(&k.as_str()) || STRUCTURAL.contains(&k.as_str()) {
                continue;
            }
            let (bv, cv) = (b.get(k), c.get(k));
            if bv != cv {
                self.out.push(format!(
                    "{path}: `{k}` changed from {} to {}",
                    show(bv),
                    show(cv)
                ));
            }
        }
    }

    fn enums(&mut self, path: &str, b: &Map<String, Value>, c: &Map<String, Value>) {
        match (b.get("enum"), c.get("enum")) {
            (None, None) => {}
            (Some(Value::Array(bv)), Some(Value::Array(cv))) => {
                for v in bv.iter().filter(|v| !cv.contains(v)) {
                    self.out.push(format!("{path}: enum value {v} was removed"));
                }
            }
            (bv, cv) => self.out.push(format!(
                "{path}: `enum` changed from {} to {}",
                show(bv),
                show(cv)
            )),
        }
    }

    fn required(&mut self, path: &str, b: &Map<String, Value>, c: &Map<String, Value>) {
        let (br, cr) = (names(b.get("required")), names(c.get("required")));
        for added in cr.difference(&br) {
            self.out.push(format!(
                "{path}: property {added:?} became required (new properties must be optional, optional ones stay optional)"
            ));
        }
        for dropped in br.difference(&cr) {
            self.out.push(format!(
                "{path}: property {dropped:?} is no longer required (consumers rely on it)"
            ));
        }
    }

    fn properties(
        &mut self,
        path: &str,
        b: &'a Map<String, Value>,
        c: &'a Map<String, Value>,
        depth: usize,
    ) {
        let bp = b.get("properties").and_then(Value::as_object);
        let cp = c.get("properties").and_then(Value::as_object);
        for (name, bs) in bp.into_iter().flatten() {
            match cp.and_then(|cp| cp.get(name)) {
                Some(cs) => self.node(&format!("{path}/properties/{name}"), bs, cs, depth + 1),
                None => self
                    .out
                    .push(format!("{path}: property {name:?} was removed")),
            }
        }
        let closed = b.get("additionalProperties") == Some(&Value::Bool(false));
        let known = |n: &String| bp.is_some_and(|bp| bp.contains_key(n));
        for name in cp
            .into_iter()
            .flat_map(|cp| cp.keys())
            .filter(|n| !known(n))
        {
            if !closed {
                self.out.push(format!(
                    "{path}: new property {name:?} on an open object constrains values that were allowed"
                ));
            }
        }
    }

    fn all_of(&mut self, path: &str, b: &Map<String, Value>, c: &Map<String, Value>) {
        let none = Vec::new();
        let ba = b.get("allOf").and_then(Value::as_array).unwrap_or(&none);
        let ca = c.get("allOf").and_then(Value::as_array).unwrap_or(&none);
        for (i, be) in ba.iter().enumerate() {
            if ca.get(i) != Some(be) {
                self.out.push(format!(
                    "{path}/allOf/{i}: an existing entry was changed or removed"
                ));
            }
        }
        for (i, ce) in ca.iter().enumerate().skip(ba.len()) {
            if !only_new_values(b, ce) {
                self.out.push(format!(
                    "{path}/allOf/{i}: a new entry must be an if/then on enum values the baseline did not have"
                ));
            }
        }
    }
}

/// True when `entry` is `{"if": {"properties": {p: {"const": v} | {"enum": [..]}}}, "then": ..}`
/// and none of the values it matches is a value of `p` in the baseline object `b`.
fn only_new_values(b: &Map<String, Value>, entry: &Value) -> bool {
    let Some(e) = entry.as_object() else {
        return false;
    };
    if e.keys().any(|k| k != "if" && k != "then") {
        return false;
    }
    let Some(props) = e
        .get("if")
        .and_then(Value::as_object)
        .filter(|i| i.len() == 1)
        .and_then(|i| i.get("properties"))
        .and_then(Value::as_object)
        .filter(|p| p.len() == 1)
    else {
        return false;
    };
    let Some((name, cond)) = props.iter().next() else {
        return false;
    };
    let matched: Vec<&Value> = match (cond.get("const"), cond.get("enum")) {
        (Some(v), None) => vec![v],
        (None, Some(Value::Array(vs))) => vs.iter().collect(),
        _ => return false,
    };
    let Some(old) = b
        .get("properties")
        .and_then(|p| p.get(name))
        .and_then(|p| p.get("enum"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    !matched.is_empty() && matched.iter().all(|v| !old.contains(v))
}

fn names(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_string(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One schema of `schemas/json/` and its baseline snapshots (path, schema).
    struct Versions {
        file: String,
        current: Value,
        baselines: Vec<(String, Value)>,
    }

    fn current_and_baselines() -> Vec<Versions> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
        let read = |p: &std::path::Path| -> Value {
            let text = std::fs::read_to_string(p).expect("read schema");
            serde_json::from_str(&text).expect("schema is JSON")
        };
        let mut out = Vec::new();
        for (_, text) in crate::json_schema::ALL {
            let cur: Value = serde_json::from_str(text).expect("schema is JSON");
            let id = cur["$id"].as_str().expect("$id").to_string();
            let file = id.rsplit('/').next().expect("file name").to_string();
            let stem = file.trim_end_matches(".schema.json").to_string();
            let mut baselines: Vec<(String, Value)> = std::fs::read_dir(dir.join("baseline"))
                .expect("baseline dir")
                .map(|e| e.expect("dir entry").path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| snapshot_of(n, &stem))
                })
                .map(|p| (p.display().to_string(), read(&p)))
                .collect();
            baselines.sort_by(|a, b| a.0.cmp(&b.0));
            out.push(Versions {
                file,
                current: cur,
                baselines,
            });
        }
        out
    }

    /// `profile.v1.schema.json` and `profile.v1.3.schema.json` are snapshots of `profile.v1`.
    fn snapshot_of(file: &str, stem: &str) -> bool {
        file.strip_prefix(stem)
            .and_then(|r| r.strip_suffix(".schema.json"))
            .is_some_and(|mid| {
                mid.is_empty()
                    || mid
                        .strip_prefix('.')
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
    }

    #[test]
    fn every_schema_is_compatible_with_every_baseline_snapshot() {
        for Versions {
            file,
            current: cur,
            baselines,
        } in current_and_baselines()
        {
            assert!(
                !baselines.is_empty(),
                "{file} has no frozen baseline in schemas/json/baseline/: copy it there"
            );
            for (path, base) in baselines {
                let broken = breaking_changes(&base, &cur);
                assert!(
                    broken.is_empty(),
                    "{file} is not backward compatible with {path}:\n  {}\n\
                     (a breaking change needs a new major version, docs/consumers.md)",
                    broken.join("\n  ")
                );
            }
        }
    }

    #[test]
    fn every_baseline_still_has_its_schema() {
        let known: Vec<String> = current_and_baselines()
            .into_iter()
            .map(|v| v.file.trim_end_matches(".schema.json").to_string())
            .collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("json/baseline");
        for e in std::fs::read_dir(dir).expect("baseline dir") {
            let name = e.expect("dir entry").file_name();
            let name = name.to_str().expect("utf-8 name");
            if !name.ends_with(".schema.json") {
                continue;
            }
            assert!(
                known.iter().any(|stem| snapshot_of(name, stem)),
                "baseline {name} has no current schema (removing a topic's schema is breaking)"
            );
        }
    }

    #[test]
    fn removing_any_property_of_any_schema_is_caught() {
        // the real check is only worth something if it fails on a real break: drop
        // each top-level property of each real schema in turn
        for Versions {
            file, current: cur, ..
        } in current_and_baselines()
        {
            let props: Vec<String> = cur["properties"]
                .as_object()
                .expect("properties")
                .keys()
                .cloned()
                .collect();
            for p in props {
                let mut broken = cur.clone();
                broken["properties"]
                    .as_object_mut()
                    .expect("properties")
                    .remove(&p);
                let found = breaking_changes(&cur, &broken);
                assert!(
                    found
                        .iter()
                        .any(|m| m.contains(&format!("{p:?} was removed"))),
                    "{file}: removing {p} went unnoticed: {found:?}"
                );
            }
        }
    }

    fn profile() -> Value {
        serde_json::from_str(crate::json_schema::PROFILE).expect("json")
    }

    fn event() -> Value {
        serde_json::from_str(crate::json_schema::CANONICAL_EVENT).expect("json")
    }

    fn identity() -> Value {
        serde_json::from_str(crate::json_schema::IDENTITY).expect("json")
    }

    fn assert_breaks(base: &Value, cur: &Value, needle: &str) {
        let found = breaking_changes(base, cur);
        assert!(
            found.iter().any(|m| m.contains(needle)),
            "expected a breaking change mentioning {needle:?}, got {found:?}"
        );
    }

    #[test]
    fn an_unchanged_schema_is_compatible() {
        for s in [profile(), event(), identity()] {
            assert_eq!(breaking_changes(&s, &s), Vec::<String>::new());
        }
    }

    #[test]
    fn a_renamed_property_is_breaking() {
        let base = profile();
        let mut cur = base.clone();
        let props = cur["properties"].as_object_mut().expect("props");
        let v = props.remove("event_count").expect("event_count");
        props.insert("events_total".into(), v);
        assert_breaks(&base, &cur, "\"event_count\" was removed");
    }

    #[test]
    fn a_changed_type_is_breaking() {
        let base = profile();
        let mut cur = base.clone();
        cur["properties"]["event_count"]["type"] = json!("string");
        assert_breaks(&base, &cur, "/properties/event_count: `type` changed");
        // widening is a change too: consumers parse the type they were promised
        let mut cur = base.clone();
        cur["properties"]["event_count"]["type"] = json!(["integer", "null"]);
        assert_breaks(&base, &cur, "`type` changed");
    }

    #[test]
    fn required_set_changes_are_breaking_both_ways() {
        let base = profile();
        let mut grown = base.clone();
        grown["required"]
            .as_array_mut()
            .expect("required")
            .push(json!("flags"));
        assert_breaks(&base, &grown, "\"flags\" became required");
        let mut shrunk = base.clone();
        shrunk["required"]
            .as_array_mut()
            .expect("required")
            .retain(|v| v != "revenue");
        assert_breaks(&base, &shrunk, "\"revenue\" is no longer required");
        // a new property must be optional
        let mut new_required = base.clone();
        new_required["properties"]["segment"] = json!({"type": "string"});
        new_required["required"]
            .as_array_mut()
            .expect("required")
            .push(json!("segment"));
        assert_breaks(&base, &new_required, "\"segment\" became required");
    }

    #[test]
    fn a_new_optional_property_and_new_enum_values_are_additive() {
        let base = profile();
        let mut cur = base.clone();
        cur["properties"]["segment"] = json!({"type": "string"});
        cur["properties"]["lifecycle_stage"]["enum"]
            .as_array_mut()
            .expect("enum")
            .push(json!("won_back"));
        cur["title"] = json!("another title");
        cur["properties"]["version"]["description"] = json!("now documented");
        assert_eq!(breaking_changes(&base, &cur), Vec::<String>::new());
    }

    #[test]
    fn a_removed_enum_value_is_breaking() {
        let base = profile();
        let mut cur = base.clone();
        cur["properties"]["lifecycle_stage"]["enum"]
            .as_array_mut()
            .expect("enum")
            .retain(|v| v != "churned");
        assert_breaks(&base, &cur, "enum value \"churned\" was removed");
    }

    #[test]
    fn a_new_property_on_an_open_object_is_breaking() {
        // `traits` is free-form: declaring `traits.name` a number would refuse
        // profiles that were valid
        let base = profile();
        let mut cur = base.clone();
        cur["properties"]["traits"]["properties"] = json!({"name": {"type": "number"}});
        assert_breaks(&base, &cur, "new property \"name\" on an open object");
    }

    #[test]
    fn nested_changes_are_found_in_items_refs_and_maps() {
        // profile: identifiers[].value inside `items`
        let base = profile();
        let mut cur = base.clone();
        cur["properties"]["identifiers"]["items"]["properties"]["value"]["type"] = json!("integer");
        assert_breaks(
            &base,
            &cur,
            "/properties/identifiers/items/properties/value: `type` changed",
        );
        // profile: values of the event_counts map
        let mut cur = base.clone();
        cur["properties"]["event_counts"]["additionalProperties"]["type"] = json!("number");
        assert_breaks(
            &base,
            &cur,
            "/properties/event_counts/additionalProperties: `type` changed",
        );
        // canonical event: identifiers are a $ref to $defs; a removed property there
        // breaks `identifiers`, `target` and `claimed`
        let base = event();
        let mut cur = base.clone();
        cur["$defs"]["identifier"]["properties"]
            .as_object_mut()
            .expect("props")
            .remove("value");
        assert_breaks(
            &base,
            &cur,
            "/properties/identifiers/items: property \"value\" was removed",
        );
        // a tightened bound on a nested property
        let mut cur = base.clone();
        cur["properties"]["revenue"]["properties"]["currency"]["maxLength"] = json!(3);
        assert_breaks(
            &base,
            &cur,
            "/properties/revenue/properties/currency: `maxLength` changed",
        );
    }

    #[test]
    fn conditional_rules_may_only_be_added_for_new_enum_values() {
        let base = identity();
        // a rule for an existing action is breaking: old `merge` messages had no identifier
        let mut cur = base.clone();
        cur["allOf"].as_array_mut().expect("allOf").push(json!(
            {"if": {"properties": {"action": {"const": "merge"}}}, "then": {"required": ["identifier"]}}
        ));
        assert_breaks(&base, &cur, "/allOf/3: a new entry");
        // a new action with its own rule is additive
        let mut cur = base.clone();
        cur["properties"]["action"]["enum"]
            .as_array_mut()
            .expect("enum")
            .push(json!("consent"));
        cur["allOf"].as_array_mut().expect("allOf").push(json!(
            {"if": {"properties": {"action": {"const": "consent"}}}, "then": {"required": ["identifier"]}}
        ));
        assert_eq!(breaking_changes(&base, &cur), Vec::<String>::new());
        // changing an existing rule is breaking
        let mut cur = base.clone();
        cur["allOf"][0]["then"]["required"] = json!(["merged_customer_id", "identifier"]);
        assert_breaks(&base, &cur, "/allOf/0: an existing entry was changed");
    }

    #[test]
    fn a_changed_const_or_closed_object_is_breaking() {
        let base = profile();
        let mut cur = base.clone();
        cur["properties"]["schema_version"]["const"] = json!(2);
        assert_breaks(&base, &cur, "/properties/schema_version: `const` changed");
        let mut cur = base.clone();
        cur["additionalProperties"] = json!(true);
        assert_breaks(&base, &cur, ": `additionalProperties` changed");
    }

    #[test]
    fn an_unresolvable_ref_is_reported() {
        let base = event();
        let mut cur = base.clone();
        cur["$defs"]
            .as_object_mut()
            .expect("defs")
            .remove("identifier");
        assert_breaks(&base, &cur, "cannot follow $ref");
    }

    #[test]
    fn snapshot_names() {
        assert!(snapshot_of("profile.v1.schema.json", "profile.v1"));
        assert!(snapshot_of("profile.v1.2.schema.json", "profile.v1"));
        assert!(!snapshot_of("profile.v10.schema.json", "profile.v1"));
        assert!(!snapshot_of("profile.v1.x.schema.json", "profile.v1"));
        assert!(!snapshot_of(
            "identity-command.v1.schema.json",
            "identity.v1"
        ));
    }
}
