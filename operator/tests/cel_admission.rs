//! The fake API server's CEL admission (`common/cel_admission.rs`): the CRDs' rules on create,
//! update and `/status` update, with transition rules and ratcheting, worded as kube-apiserver does.

// The module alone: it does not need the rest of `common` (the fake API server).
#[path = "common/cel_admission.rs"]
mod cel_admission;

use cel_admission::{Schema, admit, main_update, status_update};
use serde_json::{Value, json};

const V: &str = "lumenore.io/v1alpha1";
const LC: &str = "lumenoreconnectors";
const LFR: &str = "lumenorefleetrollouts";
const NAME_RULE_MESSAGE: &str = "metadata.name must be a DNS-1035 label: at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (it names the connector's Service)";

fn connector(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": V, "kind": "LumenoreConnector",
        "metadata": {"name": name, "namespace": "tenants", "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec,
    })
}

fn spec() -> Value {
    json!({
        "tenant": "acme",
        "region": {"cloud": "aws", "name": "eu-west-1"},
        "serverUrl": "https://acme.lumenore.com",
        "credentials": {"secretName": "acme-creds", "clientIdKey": "client-id", "clientSecretKey": "client-secret"},
    })
}

fn with(mut v: Value, pointer: &str, x: Value) -> Value {
    *v.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = x;
    v
}

fn ready_status() -> Value {
    json!({"status": {"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Available", "message": "1/1 ready",
         "lastTransitionTime": "2025-01-01T00:00:00Z"}
    ]}})
}

fn rollout(spec: Value) -> Value {
    json!({"apiVersion": V, "kind": "LumenoreFleetRollout",
           "metadata": {"name": "r", "namespace": "lumenore-system"}, "spec": spec})
}

fn rollout_spec() -> Value {
    json!({"image": "ghcr.io/lumenore/lumenore-connector:0.2.0", "waves": [
        {"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}, "percent": 100},
        {"name": "rest", "percent": 100}
    ]})
}

/// The connector CRD's schema, from the file the module loads.
fn connector_schema() -> Value {
    let crd: Value =
        serde_saphyr::from_str(include_str!("../../crds/lumenore.io_lumenoreconnectors.yaml")).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn valid_objects_pass_on_create() {
    admit(V, LC, &connector("acme", spec()), None).unwrap();
    let embedded = json!({"tenant": "demo", "region": {"cloud": "oci", "name": "eu-frankfurt-1"}, "backend": "embedded"});
    admit(V, LC, &connector("demo", embedded), None).unwrap();
    admit(V, LFR, &rollout(rollout_spec()), None).unwrap();
}

#[test]
fn kinds_that_are_not_these_crds_pass() {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "acme.eu"}});
    admit("v1", "services", &svc, None).unwrap();
    admit("apps/v1", "deployments", &svc, None).unwrap();
    admit("other.io/v1", LC, &svc, None).unwrap();
    let err = admit("lumenore.io/v9", LC, &connector("acme", spec()), None).unwrap_err();
    assert!(err.contains("could not find the requested resource"), "{err}");
}

#[test]
fn an_invalid_field_is_refused_with_its_path() {
    let bad = connector(
        "acme",
        with(spec(), "/serverUrl", json!("http://acme.lumenore.com")),
    );
    assert_eq!(
        admit(V, LC, &bad, None).unwrap_err(),
        r#"LumenoreConnector.lumenore.io "acme" is invalid: spec.serverUrl: Invalid value: "string": serverUrl must be an https URL"#
    );
    // A rule with a fieldPath: reported at spec.credentials, the value is the node's type (object).
    let mut no_creds = spec();
    no_creds.as_object_mut().unwrap().remove("credentials");
    assert_eq!(
        admit(V, LC, &connector("acme", no_creds), None).unwrap_err(),
        r#"LumenoreConnector.lumenore.io "acme" is invalid: spec.credentials: Invalid value: "object": credentials are required when backend is lumenore"#
    );
    // Several errors: aggregated in brackets.
    let two = with(
        with(spec(), "/serverUrl", json!("http://x")),
        "/tenant",
        json!("Acme"),
    );
    let err = admit(V, LC, &connector("acme", two), None).unwrap_err();
    assert!(
        err.starts_with(r#"LumenoreConnector.lumenore.io "acme" is invalid: ["#),
        "{err}"
    );
    assert!(
        err.contains(r#"spec.serverUrl: Invalid value: "string": serverUrl must be an https URL"#),
        "{err}"
    );
    assert!(
        err.contains(r#"spec.tenant: Invalid value: "string": tenant must be a DNS label"#),
        "{err}"
    );
    // The rollout's spec rules (fieldPath .waves).
    let dup = with(rollout_spec(), "/waves/0/name", json!("rest"));
    assert_eq!(
        admit(V, LFR, &rollout(dup), None).unwrap_err(),
        r#"LumenoreFleetRollout.lumenore.io "r" is invalid: spec.waves: Invalid value: "object": waves[].name must be unique"#
    );
}

#[test]
fn an_immutable_field_cannot_change_on_update() {
    let stored = connector("acme", spec());
    let sent = connector("acme", with(spec(), "/tenant", json!("globex")));
    assert_eq!(
        admit(V, LC, &main_update(&stored, &sent), Some(&stored)).unwrap_err(),
        r#"LumenoreConnector.lumenore.io "acme" is invalid: spec.tenant: Invalid value: "string": tenant is immutable"#
    );
    let sent = connector("acme", with(spec(), "/region/name", json!("us-east-1")));
    let err = admit(V, LC, &main_update(&stored, &sent), Some(&stored)).unwrap_err();
    assert!(
        err.contains("spec.region: Invalid value: \"object\": region is immutable"),
        "{err}"
    );
    // Transition rules do not run on create, other fields may change.
    admit(
        V,
        LC,
        &connector("acme", with(spec(), "/tenant", json!("globex"))),
        None,
    )
    .unwrap();
    let sent = connector(
        "acme",
        with(spec(), "/serverUrl", json!("https://eu.acme.lumenore.com")),
    );
    admit(V, LC, &main_update(&stored, &sent), Some(&stored)).unwrap();
}

#[test]
fn ratcheting_accepts_an_untouched_invalid_field() {
    // Stored before the serverUrl rule (or under a looser one): http.
    let stored = connector(
        "acme",
        with(spec(), "/serverUrl", json!("http://acme.lumenore.com")),
    );
    admit(V, LC, &stored, None).unwrap_err();
    // An update of another field: spec.serverUrl is unchanged, its error is dropped.
    let mut sent = stored.clone();
    sent["spec"]["suspend"] = json!(true);
    admit(V, LC, &main_update(&stored, &sent), Some(&stored)).unwrap();
    // A status write of it too.
    admit(V, LC, &status_update(&stored, &ready_status()), Some(&stored)).unwrap();
    // Touching the field itself: judged again.
    let sent = with(
        stored.clone(),
        "/spec/serverUrl",
        json!("http://eu.acme.lumenore.com"),
    );
    let err = admit(V, LC, &main_update(&stored, &sent), Some(&stored)).unwrap_err();
    assert!(
        err.contains("spec.serverUrl: Invalid value: \"string\": serverUrl must be an https URL"),
        "{err}"
    );
    // A node's rule ratchets on the node, not on its fieldPath: the spec rule on credentials runs
    // again as soon as anything in spec changes.
    let mut no_creds = spec();
    no_creds.as_object_mut().unwrap().remove("credentials");
    let stored = connector("acme", no_creds);
    admit(V, LC, &status_update(&stored, &ready_status()), Some(&stored)).unwrap();
    let mut sent = stored.clone();
    sent["spec"]["suspend"] = json!(true);
    let err = admit(V, LC, &main_update(&stored, &sent), Some(&stored)).unwrap_err();
    assert!(
        err.contains("spec.credentials: Invalid value: \"object\": credentials are required"),
        "{err}"
    );
}

/// The root rule on metadata.name as it was before the fix.
const OLD_NAME_RULE: &str =
    "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";

#[test]
fn status_write_on_object_stored_before_the_name_rule() {
    // `acme.eu` was stored by a version of the CRD without the name rule.
    let stored = connector("acme.eu", spec());
    let status_write = status_update(&stored, &ready_status());
    let refused = format!(
        r#"LumenoreConnector.lumenore.io "acme.eu" is invalid: <nil>: Invalid value: "object": {NAME_RULE_MESSAGE}"#
    );

    // With the rule as it was: every status write is refused (a root rule is never ratcheted).
    let mut old_crd = connector_schema();
    old_crd["x-kubernetes-validations"] = json!([{"rule": OLD_NAME_RULE, "message": NAME_RULE_MESSAGE}]);
    let old_crd = Schema::new(&old_crd);
    let kind = "LumenoreConnector.lumenore.io";
    assert_eq!(
        old_crd.admit(kind, &status_write, Some(&stored)).unwrap_err(),
        refused
    );
    // Even a write that changes nothing.
    assert_eq!(old_crd.admit(kind, &stored, Some(&stored)).unwrap_err(), refused);

    // With the CRD as generated now: the rule judges creation only.
    let root_rules = &connector_schema()["x-kubernetes-validations"];
    assert_eq!(root_rules[0]["optionalOldSelf"], json!(true), "{root_rules}");
    admit(V, LC, &status_write, Some(&stored)).unwrap();
    let mut sent = stored.clone();
    sent["spec"]["suspend"] = json!(true);
    admit(V, LC, &main_update(&stored, &sent), Some(&stored)).unwrap();

    // Creating an object under that name is still refused, with the rule's message.
    assert_eq!(admit(V, LC, &stored, None).unwrap_err(), refused);
    for bad in ["3m", &"a".repeat(64), "Acme", "acme-"] {
        let err = admit(V, LC, &connector(bad, spec()), None).unwrap_err();
        assert!(err.contains(NAME_RULE_MESSAGE), "{bad}: {err}");
    }
    admit(V, LC, &connector(&"a".repeat(63), spec()), None).unwrap();
}

/// kube-cel binds `oldSelf` of an `optionalOldSelf` rule to `null` / the plain old value instead of
/// `optional.none()` / `optional.of(old)` (kube-apiserver, `validationActivationWithOldSelf`):
/// `oldSelf.hasValue()` is an evaluation error there. CEL's `||` absorbs it when the other side is
/// true, so a valid name passes, but `acme.eu` is refused (without the rule's message) on create AND
/// on update: kube-cel alone would not show the fix. The admission module gives the server's binding.
#[test]
fn optional_old_self_is_bound_as_the_api_server_binds_it() {
    let schema = connector_schema();
    let raw = |o: &Value, old: Option<&Value>| kube::core::cel::Validator::new().validate(&schema, o, old);
    let (valid, stored) = (connector("acme", spec()), connector("acme.eu", spec()));
    raw(&valid, None).unwrap();
    raw(&valid, Some(&valid)).unwrap();
    for old in [None, Some(&stored)] {
        let errs = raw(&stored, old).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].kind,
            kube::core::cel::ErrorKind::EvaluationError,
            "{errs:?}"
        );
        assert!(errs[0].message.contains("want 'optional_type'"), "{errs:?}");
    }
    // The module: create judged, update not.
    admit(V, LC, &valid, None).unwrap();
    admit(V, LC, &valid, Some(&valid)).unwrap();
    admit(V, LC, &stored, Some(&stored)).unwrap();
    let err = admit(V, LC, &stored, None).unwrap_err();
    assert!(
        err.ends_with(&format!(r#"<nil>: Invalid value: "object": {NAME_RULE_MESSAGE}"#)),
        "{err}"
    );
    let rule_only = |rule: &str| {
        Schema::new(&json!({"type": "object", "x-kubernetes-validations": [
            {"rule": rule, "optionalOldSelf": true, "message": "m"}
        ]}))
    };
    let obj = json!({"metadata": {"name": "x"}, "spec": {"a": 1}});
    let old = json!({"metadata": {"name": "x"}, "spec": {"a": 2}});
    let none_on_create = rule_only("!oldSelf.hasValue()");
    none_on_create.admit("K.g", &obj, None).unwrap();
    none_on_create.admit("K.g", &obj, Some(&old)).unwrap_err();
    let value_on_update = rule_only("oldSelf.hasValue() && oldSelf.value().spec.a == 2");
    value_on_update.admit("K.g", &obj, Some(&old)).unwrap();
    value_on_update.admit("K.g", &obj, None).unwrap_err();
    // `orValue`, and `oldSelf` inside a string literal left alone.
    let or_value = rule_only("oldSelf.orValue(self).spec.a == 2 || 'oldSelf' == 'x'");
    or_value.admit("K.g", &obj, Some(&old)).unwrap();
    let err = or_value.admit("K.g", &obj, None).unwrap_err();
    assert_eq!(err, r#"K.g "x" is invalid: <nil>: Invalid value: "object": m"#);
}

/// Issue 23: the rate-limit store's rules, as the API server would apply them from crds/.
#[test]
fn the_rate_limit_store_is_checked_by_the_schema_and_cel() {
    let store = |redis: Value| {
        let mut spec = spec();
        spec["rateLimits"] = json!({"tenantPerMinute": 600, "store": {"redis": redis}});
        spec
    };
    admit(
        V,
        LC,
        &connector("acme", store(json!({"url": "redis://redis.platform.svc:6379/0"}))),
        None,
    )
    .unwrap();
    admit(
        V,
        LC,
        &connector(
            "acme",
            store(json!({"url": "rediss://redis.platform.svc", "caSecretRef": {"name": "tls", "key": "ca.pem"}})),
        ),
        None,
    )
    .unwrap();
    let err = admit(
        V,
        LC,
        &connector(
            "acme",
            store(
                json!({"url": "redis://redis.platform.svc", "caSecretRef": {"name": "tls", "key": "ca.pem"}}),
            ),
        ),
        None,
    )
    .unwrap_err();
    assert!(err.contains("caSecretRef needs a rediss:// url"), "{err}");
    // A password in the URL would put it in the pod spec: the pattern refuses any user part.
    let err = admit(
        V,
        LC,
        &connector(
            "acme",
            store(json!({"url": "redis://:hunter2@redis.platform.svc"})),
        ),
        None,
    )
    .unwrap_err();
    assert!(
        err.contains("spec.rateLimits.store.redis.url: Invalid value: \"string\": rateLimits.store.redis.url must not carry a user or password"),
        "{err}"
    );
}

/// `spec.analysis` of a fleet rollout: what a schema alone cannot say.
#[test]
fn analysis_rules() {
    let analysed = |analysis: Value| {
        let mut s = rollout_spec();
        s["analysis"] = analysis;
        rollout(s)
    };
    let ok = json!({
        "prometheus": {"url": "https://prometheus.monitoring.svc:9090/prefix",
                       "bearerTokenSecretRef": {"name": "prom", "key": "token"},
                       "caSecretRef": {"name": "prom", "key": "ca.crt"}},
        "custom": [{"name": "backend-errors", "query": "sum(x{tenant=~\"{{ wave }}\"})", "max": 1}]
    });
    admit(V, LFR, &analysed(ok.clone()), None).unwrap();
    let refused = |a: Value, want: &str| {
        let err = admit(V, LFR, &analysed(a), None).unwrap_err();
        assert!(err.contains(want), "{err}\nwanted: {want}");
    };
    refused(
        with(
            ok.clone(),
            "/prometheus/url",
            json!("https://user:pw@prometheus:9090"),
        ),
        "prometheus.url must be an http(s) URL with a host and no user part, query or fragment",
    );
    refused(
        with(ok.clone(), "/prometheus/url", json!("http://prometheus:9090")),
        "caSecretRef needs an https url",
    );
    let mut plain = ok.clone();
    plain["prometheus"].as_object_mut().unwrap().remove("caSecretRef");
    plain["prometheus"]["url"] = json!("http://prometheus.monitoring.svc:9090");
    refused(plain.clone(), "credentials are sent over https only");
    plain["prometheus"]["url"] = json!("http://127.0.0.1:9090");
    admit(V, LFR, &analysed(plain), None).unwrap();
    let mut both = ok.clone();
    both["prometheus"]["basicAuthSecretRef"] = json!({"name": "prom"});
    refused(both, "set bearerTokenSecretRef or basicAuthSecretRef, not both");
    refused(
        with(ok.clone(), "/custom/0", json!({"name": "x", "query": "up"})),
        "a custom check needs max, min or both",
    );
    refused(
        json!({"prometheus": {"url": "http://p:9090"}, "errorRatio": {"enabled": false}, "latency": {"enabled": false}}),
        "analysis needs a check: errorRatio, latency or custom",
    );
    let mut no_bake = rollout_spec();
    no_bake["analysis"] = ok;
    no_bake["bakeSeconds"] = json!(0);
    let err = admit(V, LFR, &rollout(no_bake), None).unwrap_err();
    assert!(
        err.contains("analysis judges the bake: bakeSeconds must be above 0"),
        "{err}"
    );
}
