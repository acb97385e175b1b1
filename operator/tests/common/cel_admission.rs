//! CEL admission for the fake API server: the CRDs' `x-kubernetes-validations`, evaluated as
//! kube-apiserver 1.33/1.34 evaluates them on create, update and `/status` update.
//!
//! The rules are evaluated by the `cel` support kube ships (`kube::core::cel`, the kube-cel crate);
//! this module only wires it to the generated CRDs in `crds/` and adds what kube-cel leaves out.
//! Sources read (kubernetes/apiextensions-apiserver at v0.33.0 unless said otherwise):
//!
//! - Create: `pkg/registry/customresource/strategy.go`, `Validate`, runs the CEL validator over the
//!   whole object with `oldObj = nil`. `pkg/apiserver/schema/cel/validation.go`,
//!   `validateExpressions`: a rule that uses `oldSelf` is skipped without an old value unless it sets
//!   `optionalOldSelf: true`; such a rule runs with `oldSelf = optional.none()`, and on update with
//!   `oldSelf = optional.of(old)` (`validationActivationWithOldSelf`). Only non-null values are
//!   validated.
//! - Update of the resource: `strategy.go`, `ValidateUpdate`; of `/status`:
//!   `pkg/registry/customresource/status_strategy.go`, `ValidateUpdate`. Both call
//!   `celValidator.Validate(..., uNew.Object, uOld.Object, ...)`: every rule, spec and root rules
//!   included, runs over the WHOLE new object against the whole old one. What differs is the object:
//!   `PrepareForUpdate` of the status strategy keeps everything of the old object but the status
//!   ([`status_update`]); the main strategy keeps the old status ([`main_update`]). [`admit`] takes
//!   the object as prepared.
//! - Ratcheting (`CRDValidationRatcheting`, GA and locked on since 1.33:
//!   `pkg/features/kube_features.go`): `validation.go`, `addErr`, drops the error of a rule that
//!   does not use `oldSelf` when `correlation.shouldRatchetError()`: the value at the rule's schema
//!   node (not at its `fieldPath`) is deep-equal to the old one, or, where the node cannot be
//!   correlated, its nearest correlatable ancestor is. Correlation and deep-equality:
//!   kubernetes/apiserver `pkg/cel/common/equality.go` (`CorrelatedObject.Key/Index/CachedDeepEqual`):
//!   a property correlates only if both objects have it and the schema declares it (or
//!   `additionalProperties` does); list items only in `x-kubernetes-list-type: map` lists, by their
//!   keys; a map is deep-equal only if every key correlates. So the ROOT of these CRDs is never
//!   deep-equal (`apiVersion`, `kind`, `metadata` are in every object and in no schema's
//!   `properties`): a root rule is never ratcheted, whatever the update changed.
//! - Error wording: `validation.go`, `fieldErrorForReason(currentFldPath, sts.Type, message, reason)`
//!   (the rule node's path plus its `fieldPath`; the value is the node's schema type, hence
//!   `Invalid value: "object"`), `ruleMessageOrDefault`; kubernetes/apimachinery
//!   `pkg/util/validation/field/errors.go` (`Error`, `ErrorBody`), `path.go` (a nil root path prints
//!   `<nil>`), `pkg/api/errors/errors.go` (`NewInvalid`: `<Kind>.<group> "<name>" is invalid: <errs>`)
//!   and `pkg/util/errors/errors.go` (several errors: `[e1, e2]`, duplicates dropped). From 1.35
//!   (apiextensions-apiserver v0.35.0) object/array values are omitted (`spec: Invalid value: <msg>`)
//!   and scalar ones printed; this module words errors as 1.33/1.34 do.
//!
//! What kube-cel 0.8 (`~/.cargo/registry/src/*/kube-cel-0.8.0/src/validation/mod.rs`) does and does
//! not do, and how it is handled here:
//! - It applies schema defaults to new and old before evaluating (`validate` = the old
//!   `validate_with_defaults`), as the server does; ratcheting compares the defaulted objects too.
//! - It does not ratchet: every failing rule is reported. Here errors are dropped afterwards per the
//!   rules above, the rule's node found from the error's field path (minus the rule's `fieldPath`).
//! - It binds `oldSelf` of an `optionalOldSelf` rule to `null` on create and to the plain old value
//!   on update, not to `optional.none()` / `optional.of(old)`: `oldSelf.hasValue()` is an evaluation
//!   error under kube-cel. Here such a rule is handed to kube-cel with every `oldSelf` identifier
//!   rewritten to `(oldSelf == null ? optional.none() : optional.of(oldSelf))`, which restores the
//!   server's binding (a `messageExpression` is not rewritten; the server evaluates it with the
//!   non-optional binding anyway).
//! - It correlates list items with old items by index, for every list type; the server only in
//!   list-type map lists, by key. These CRDs have no rule under a list item, a map value or an
//!   `allOf`/`anyOf`/`oneOf`, and loading refuses a CRD that has (the model would need extending).
//! - Its error carries the field path (`spec.serverUrl`, root `""`), the message (messageExpression,
//!   message or `failed rule: <rule>`) and the reason. Each rule's `reason` is replaced by a tag
//!   before evaluation so the error identifies its rule; the original reason picks the wording.
//! - Only CEL is modelled: not the OpenAPI checks (`pattern`, `maxLength`, `required`, `enum`) nor
//!   list-type uniqueness, which the server runs first (`hasBlockingErr`).
#![allow(dead_code)]

use std::sync::LazyLock;

use kube::core::cel::{self as kcel, ErrorKind, ValidationError, Validator};
use serde_json::Value;

/// The CRDs in `crds/`, as `crdgen` writes them (tests fail when they are stale).
const CRD_YAMLS: [&str; 2] = [
    include_str!("../../../crds/lumenore.io_lumenoreconnectors.yaml"),
    include_str!("../../../crds/lumenore.io_lumenorefleetrollouts.yaml"),
];

/// Tag put in each rule's `reason` so that kube-cel's error names the rule it came from.
const RULE_TAG: &str = "cel-admission-rule-";

/// The wrapper that gives an `optionalOldSelf` rule the server's binding under kube-cel.
const OPTIONAL_OLD_SELF: &str = "(oldSelf == null ? optional.none() : optional.of(oldSelf))";

/// One served version of one CRD.
struct Served {
    group: String,
    kind: String,
    plural: String,
    version: String,
    served: bool,
    schema: Schema,
}

/// A version's `openAPIV3Schema`, prepared for kube-cel.
pub struct Schema {
    /// As in the CRD (defaults, correlation).
    original: Value,
    /// The rules tagged and `optionalOldSelf` rules rewritten.
    for_kube_cel: Value,
    rules: Vec<RuleInfo>,
}

struct RuleInfo {
    /// Property names from the root to the rule's schema node.
    node: Vec<String>,
    /// The rule as the CRD has it, and as kube-cel evaluates it.
    rule: String,
    evaluated: String,
    message: Option<String>,
    message_expression: Option<String>,
    reason: Option<String>,
    /// As in the CRD (e.g. `.credentials`).
    field_path: Option<String>,
    uses_old_self: bool,
    /// The node's schema `type`, the value the 1.33/1.34 error shows.
    node_type: String,
}

thread_local! {
    static VALIDATOR: Validator = Validator::new();
}

static CRDS: LazyLock<Vec<Served>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for yaml in CRD_YAMLS {
        let crd: Value = serde_saphyr::from_str(yaml).expect("CRD YAML parses");
        let spec = &crd["spec"];
        for v in spec["versions"].as_array().expect("CRD versions") {
            out.push(Served {
                group: str_at(spec, "group"),
                kind: str_at(&spec["names"], "kind"),
                plural: str_at(&spec["names"], "plural"),
                version: str_at(v, "name"),
                served: v["served"].as_bool().unwrap_or(false),
                schema: Schema::new(&v["schema"]["openAPIV3Schema"]),
            });
        }
    }
    out
});

fn str_at(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// Admission of a write of `new` (`old`: the stored object on update, `None` on create) to the
/// resource `plural` of `api_version`, as kube-apiserver 1.33/1.34 judges the CRD's CEL rules.
///
/// `new` is the object the strategy validates: for `/status` updates see [`status_update`], for
/// updates of the resource [`main_update`]. `Err` is the 422 message
/// (`LumenoreConnector.lumenore.io "acme.eu" is invalid: <nil>: Invalid value: "object": …`).
/// `Ok` for resources that are not these CRDs. A version the CRD does not serve is an `Err`
/// (the server answers 404 there).
pub fn admit(api_version: &str, plural: &str, new: &Value, old: Option<&Value>) -> Result<(), String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let mut of_resource = CRDS
        .iter()
        .filter(|c| c.group == group && c.plural == plural)
        .peekable();
    if of_resource.peek().is_none() {
        return Ok(());
    }
    match of_resource.find(|c| c.version == version && c.served) {
        Some(c) => c.schema.admit(&format!("{}.{}", c.kind, c.group), new, old),
        None => Err(format!(
            "the server could not find the requested resource ({plural}.{group} serves no version {version})"
        )),
    }
}

/// The object the `/status` strategy validates: the stored object with the status of the request
/// (`status_strategy.go`, `PrepareForUpdate`; `metadata.managedFields` come from the request).
pub fn status_update(old: &Value, sent: &Value) -> Value {
    let mut new = old.clone();
    if let Some(mf) = sent.pointer("/metadata/managedFields") {
        new["metadata"]["managedFields"] = mf.clone();
    }
    let obj = new.as_object_mut().expect("object");
    match sent.get("status") {
        Some(s) => {
            obj.insert("status".into(), s.clone());
        }
        None => {
            obj.remove("status");
        }
    }
    new
}

/// The object the main strategy validates when the CRD has a status subresource: the request with
/// the stored status, its generation bumped when anything but metadata changed (`strategy.go`,
/// `PrepareForUpdate`).
pub fn main_update(old: &Value, sent: &Value) -> Value {
    let mut new = sent.clone();
    let obj = new.as_object_mut().expect("object");
    match old.get("status") {
        Some(s) => {
            obj.insert("status".into(), s.clone());
        }
        None => {
            obj.remove("status");
        }
    }
    let non_meta = |v: &Value| {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m
    };
    if non_meta(&new) != non_meta(old) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = Value::from(generation + 1);
    }
    new
}

impl Schema {
    /// Prepare an `openAPIV3Schema` (e.g. an older CRD's) for [`Schema::admit`].
    pub fn new(schema: &Value) -> Schema {
        let mut for_kube_cel = schema.clone();
        let mut rules = Vec::new();
        prepare(&mut for_kube_cel, &mut Vec::new(), false, &mut rules);
        Schema {
            original: schema.clone(),
            for_kube_cel,
            rules,
        }
    }

    /// [`admit`] against this schema; `kind_group` as in the message (`LumenoreConnector.lumenore.io`).
    pub fn admit(&self, kind_group: &str, new: &Value, old: Option<&Value>) -> Result<(), String> {
        let errors = match VALIDATOR.with(|v| v.validate(&self.for_kube_cel, new, old)) {
            Ok(()) => return Ok(()),
            Err(e) => e.into_vec(),
        };
        // The server defaults the request and the stored object before validating; kube-cel did
        // the same for its evaluation, ratcheting compares the defaulted objects as well.
        let defaulted = old.map(|o| {
            (
                kcel::apply_defaults(&self.original, new),
                kcel::apply_defaults(&self.original, o),
            )
        });
        let mut out: Vec<String> = Vec::new();
        for e in &errors {
            let line = match self.rule_of(e) {
                Some(info) => {
                    let node = node_path(&e.field_path, info.field_path.as_deref());
                    let failed = matches!(e.kind, ErrorKind::ValidationFailure | ErrorKind::InvalidResult);
                    if failed
                        && !info.uses_old_self
                        && let Some((new_d, old_d)) = &defaulted
                        && should_ratchet(&self.original, new_d, old_d, &segments(&node))
                    {
                        continue;
                    }
                    if failed {
                        info.field_error(&node, &e.message)
                    } else {
                        format!(
                            "{}: Invalid value: {:?}: {} evaluating rule: {}",
                            k8s_path(&node),
                            info.node_type,
                            e.message,
                            info.error_string()
                        )
                    }
                }
                // Not one of the rules (e.g. schema nesting too deep): as kube-cel says it.
                None => format!(
                    "{}: Invalid value: \"object\": {}",
                    k8s_path(&e.field_path),
                    e.message
                ),
            };
            if !out.contains(&line) {
                out.push(line);
            }
        }
        let name = new
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match out.len() {
            0 => Ok(()),
            1 => Err(format!("{kind_group} {name:?} is invalid: {}", out[0])),
            _ => Err(format!("{kind_group} {name:?} is invalid: [{}]", out.join(", "))),
        }
    }

    /// The rule an error came from: by the tag in its reason, else (evaluation errors carry no
    /// reason) by its text and path.
    fn rule_of(&self, e: &ValidationError) -> Option<&RuleInfo> {
        if let Some(i) = e.reason.as_deref().and_then(|r| r.strip_prefix(RULE_TAG)) {
            return i.parse::<usize>().ok().and_then(|i| self.rules.get(i));
        }
        let mut same_text = self.rules.iter().filter(|r| r.evaluated == e.rule);
        let first = same_text.clone().next();
        same_text
            .find(|r| {
                let node = r.node.join(".");
                e.field_path == node || node_path(&e.field_path, r.field_path.as_deref()) == node
            })
            .or(first)
    }
}

impl RuleInfo {
    /// `field.Error.Error()` of `fieldErrorForReason(currentFldPath, sts.Type, detail, reason)`.
    fn field_error(&self, node: &str, evaluated_message: &str) -> String {
        let path = match self.field_path.as_deref() {
            Some(fp) => join(node, fp.trim_start_matches('.')),
            None => node.to_string(),
        };
        let path = k8s_path(&path);
        let detail = self.detail(evaluated_message);
        match self.reason.as_deref() {
            Some("FieldValueForbidden") => format!("{path}: Forbidden: {detail}"),
            Some("FieldValueRequired") => format!("{path}: Required value: {detail}"),
            Some("FieldValueDuplicate") => format!("{path}: Duplicate value: {:?}", self.node_type),
            _ => format!("{path}: Invalid value: {:?}: {detail}", self.node_type),
        }
    }

    /// `ruleMessageOrDefault`; a `messageExpression` result is kube-cel's message.
    fn detail(&self, evaluated_message: &str) -> String {
        match (&self.message_expression, &self.message) {
            (Some(_), _) => evaluated_message.trim().to_string(),
            (None, Some(m)) if !m.trim().is_empty() => m.trim().to_string(),
            _ => format!("failed rule: {}", self.rule.trim()),
        }
    }

    /// `ruleErrorString`.
    fn error_string(&self) -> String {
        match &self.message {
            Some(m) if !m.trim().is_empty() => m.trim().to_string(),
            _ => self.rule.trim().to_string(),
        }
    }
}

/// Walk the schema: record and tag every rule, rewrite `optionalOldSelf` rules. `uncorrelated`: under
/// list items, map values or `allOf`/`anyOf`/`oneOf`, where this model does not follow the server.
fn prepare(node: &mut Value, path: &mut Vec<String>, uncorrelated: bool, rules: &mut Vec<RuleInfo>) {
    let node_type = node["type"].as_str().unwrap_or("object").to_string();
    if let Some(list) = node
        .get_mut("x-kubernetes-validations")
        .and_then(Value::as_array_mut)
    {
        assert!(
            !uncorrelated,
            "cel_admission: a rule at {path:?} sits under a list item, map value or allOf/anyOf/oneOf; \
             this model correlates only properties: extend it"
        );
        for r in list {
            let text = str_at(r, "rule");
            let optional = r["optionalOldSelf"].as_bool() == Some(true);
            let evaluated = if optional {
                rewrite_old_self(&text)
            } else {
                text.clone()
            };
            rules.push(RuleInfo {
                node: path.clone(),
                uses_old_self: uses_old_self(&text),
                rule: text,
                evaluated: evaluated.clone(),
                message: r["message"].as_str().map(str::to_string),
                message_expression: r["messageExpression"].as_str().map(str::to_string),
                reason: r["reason"].as_str().map(str::to_string),
                field_path: r["fieldPath"].as_str().map(str::to_string),
                node_type: node_type.clone(),
            });
            r["rule"] = Value::from(evaluated);
            r["reason"] = Value::from(format!("{RULE_TAG}{}", rules.len() - 1));
        }
    }
    if let Some(props) = node.get_mut("properties").and_then(Value::as_object_mut) {
        for (k, v) in props {
            path.push(k.clone());
            prepare(v, path, uncorrelated, rules);
            path.pop();
        }
    }
    if let Some(items) = node.get_mut("items") {
        prepare(items, path, true, rules);
    }
    if let Some(ap) = node.get_mut("additionalProperties").filter(|v| v.is_object()) {
        prepare(ap, path, true, rules);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = node.get_mut(key).and_then(Value::as_array_mut) {
            for v in list {
                prepare(v, path, true, rules);
            }
        }
    }
}

/// Does the rule reference `oldSelf` (`UsesOldSelf` of the server's compilation)?
fn uses_old_self(rule: &str) -> bool {
    kcel::cel::Program::compile(rule).is_ok_and(|p| p.references().has_variable("oldSelf"))
}

/// Every `oldSelf` identifier (not in a string literal, not a field selection) wrapped so that
/// kube-cel's `null` / plain old value become `optional.none()` / `optional.of(old)`.
fn rewrite_old_self(rule: &str) -> String {
    const ID: &str = "oldSelf";
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = rule.chars().collect();
    let mut out = String::with_capacity(rule.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            // A string literal, triple-quoted or not: copy it through to its closing quote.
            let triple = chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c);
            let quote_len = if triple { 3 } else { 1 };
            let start = i;
            i += quote_len;
            while i < chars.len() {
                if chars[i] == '\\' {
                    i += 2;
                    continue;
                }
                if chars[i] == c
                    && (!triple || (chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c)))
                {
                    i += quote_len;
                    break;
                }
                i += 1;
            }
            out.extend(&chars[start..i.min(chars.len())]);
            continue;
        }
        let rest: String = chars[i..(i + ID.len()).min(chars.len())].iter().collect();
        let before_ok = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == '.');
        let after_ok = chars.get(i + ID.len()).is_none_or(|&c| !is_ident(c));
        if rest == ID && before_ok && after_ok {
            out.push_str(OPTIONAL_OLD_SELF);
            i += ID.len();
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The rule's node path from kube-cel's error path, which appends the rule's `fieldPath`
/// (`effective_path` in kube-cel).
fn node_path(error_path: &str, field_path: Option<&str>) -> String {
    let Some(fp) = field_path else {
        return error_path.to_string();
    };
    let suffix = if fp.starts_with('.') {
        fp.to_string()
    } else {
        format!(".{fp}")
    };
    if let Some(node) = error_path.strip_suffix(&suffix) {
        node.to_string()
    } else if let Some(node) = error_path.strip_suffix(fp.trim_start_matches('.')) {
        // At the root kube-cel writes a field path without the leading dot.
        node.trim_end_matches('.').to_string()
    } else {
        error_path.to_string()
    }
}

fn join(base: &str, child: &str) -> String {
    if base.is_empty() {
        child.to_string()
    } else {
        format!("{base}.{child}")
    }
}

/// A field path as `field.Path.String()` prints it: the root (a nil path) is `<nil>`.
fn k8s_path(path: &str) -> String {
    let p = path.trim_start_matches('.');
    if p.is_empty() {
        "<nil>".to_string()
    } else {
        p.to_string()
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `ratchetingOptions.key` down the node's path, then `shouldRatchetError`.
fn should_ratchet(schema: &Value, new: &Value, old: &Value, node: &[String]) -> bool {
    let mut current = Some(Correlated { new, old, schema });
    let mut nearest: Option<Correlated> = None;
    for field in node {
        let Some(c) = current else { break };
        if nearest.is_none() && (field == "apiVersion" || field == "kind") {
            return false;
        }
        current = c.key(field);
        nearest = Some(c);
    }
    match (current, nearest) {
        (Some(c), _) => c.deep_equal(),
        (None, Some(p)) => p.deep_equal(),
        (None, None) => false,
    }
}

/// kubernetes/apiserver `pkg/cel/common/equality.go`, `CorrelatedObject`.
#[derive(Clone, Copy)]
struct Correlated<'a> {
    new: &'a Value,
    old: &'a Value,
    schema: &'a Value,
}

impl<'a> Correlated<'a> {
    fn key(&self, field: &str) -> Option<Correlated<'a>> {
        let (Value::Object(new), Value::Object(old)) = (self.new, self.old) else {
            return None;
        };
        let (new, old) = (new.get(field)?, old.get(field)?);
        let schema = self
            .schema
            .get("properties")
            .and_then(|p| p.get(field))
            .or_else(|| self.schema.get("additionalProperties").filter(|a| a.is_object()))?;
        Some(Correlated { new, old, schema })
    }

    fn index(&self, i: usize) -> Option<Correlated<'a>> {
        let (Value::Array(new), Value::Array(old)) = (self.new, self.old) else {
            return None;
        };
        if self.schema["x-kubernetes-list-type"].as_str() != Some("map") {
            return None;
        }
        let keys: Vec<&str> = self.schema["x-kubernetes-list-map-keys"]
            .as_array()
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let item = new.get(i)?;
        let old_item = old
            .iter()
            .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))?;
        Some(Correlated {
            new: item,
            old: old_item,
            schema: self.schema.get("items")?,
        })
    }

    fn deep_equal(&self) -> bool {
        match (self.new, self.old) {
            (Value::Null, Value::Null) => true,
            (Value::Array(new), Value::Array(old)) => {
                if new.len() != old.len() {
                    return false;
                }
                let map_list = self.schema["x-kubernetes-list-type"].as_str() == Some("map");
                for i in 0..new.len() {
                    match self.index(i) {
                        Some(child) if child.deep_equal() => {}
                        Some(_) => return false,
                        None if map_list => return false,
                        None => return new == old,
                    }
                }
                true
            }
            (Value::Object(new), Value::Object(old)) => {
                new.len() == old.len() && new.keys().all(|k| self.key(k).is_some_and(|c| c.deep_equal()))
            }
            (new, old) => new == old,
        }
    }
}
