//! OAuth 2.1 resource-server behaviour over real HTTP, against a mock issuer (wiremock serving discovery
//! and a JWKS of the RSA and EC keys in tests/fixtures): each token failure mode, scopes mapped to tools,
//! the 401/403 challenges, RFC 9728 metadata, key rotation (unknown kid then JWKS refresh), the refresh
//! budget under a flood of unknown kids, and the caller's token never reaching the backend.

mod auth_support;
mod support;

use std::time::Duration;

use auth_support::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::start;
use wiremock::MockServer;

struct Keys {
    rsa: TestKey,
    ec: TestKey,
    rotated: TestKey,
    attacker: TestKey,
}

fn keys() -> Keys {
    Keys {
        rsa: TestKey::rsa("issuer-rsa.pem", "rsa-1"),
        ec: TestKey::ec("issuer-ec.pem", "ec-1"),
        rotated: TestKey::rsa("rotated-rsa.pem", "rsa-2"),
        attacker: TestKey::rsa("attacker-rsa.pem", "rsa-1"),
    }
}

async fn wait_for_first_fetch(issuer: &MockServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while jwks_fetches(issuer).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the JWKS was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_and_challenge(mcp: &str, token: &str) -> (u16, String) {
    let response = rpc(mcp, Some(token), &list_body()).await;
    (response.status().as_u16(), www_authenticate(&response))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_are_served_and_never_reach_the_backend() {
    let keys = keys();
    let issuer = issuer(&[&keys.rsa, &keys.ec]).await;
    let backend = backend(Duration::ZERO).await;
    let server = start(oauth_config(&backend.uri(), &issuer.uri()), static_token(), false).await;

    let rsa_token = keys.rsa.sign(&claims(&issuer.uri(), "openid lumenore:read"));
    let tools = listed_tools(rpc(&server.mcp, Some(&rsa_token), &list_body()).await).await;
    assert_eq!(tools.len(), 9);
    let response = rpc(&server.mcp, Some(&rsa_token), &call_body("nlq_to_data")).await;
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.unwrap();
    assert_eq!(
        value["result"]["structuredContent"]["status"], "success",
        "{value}"
    );

    // ES256 and an `scp` list claim work too.
    let mut ec_claims = claims(&issuer.uri(), "");
    ec_claims["scp"] = json!(["lumenore:metadata"]);
    let ec_token = keys.ec.sign(&ec_claims);
    let tools = listed_tools(rpc(&server.mcp, Some(&ec_token), &list_body()).await).await;
    assert_eq!(tools, ["get_dataset_metadata", "get_metadata_info"]);
    let response = rpc(&server.mcp, Some(&ec_token), &call_body("get_dataset_metadata")).await;
    assert_eq!(response.status(), 200);

    // An expiry just past is within the 60 s leeway.
    let mut late = claims(&issuer.uri(), "lumenore:read");
    late["exp"] = json!(now() - 30);
    assert_eq!(
        status_and_challenge(&server.mcp, &keys.rsa.sign(&late)).await.0,
        200
    );

    assert_eq!(tool_requests(&backend).await.len(), 2);
    assert_backend_never_saw(&backend, &rsa_token).await;
    assert_backend_never_saw(&backend, &ec_token).await;
    // Not even a piece of a token (its signature part).
    let signature = rsa_token.rsplit('.').next().unwrap();
    assert_backend_never_saw(&backend, signature).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_failure_mode_is_a_401_naming_invalid_token() {
    let keys = keys();
    let issuer = issuer(&[&keys.rsa, &keys.ec]).await;
    let backend = backend(Duration::ZERO).await;
    let server = start(oauth_config(&backend.uri(), &issuer.uri()), static_token(), false).await;
    let iss = issuer.uri();

    // No token: a challenge naming the metadata, without error=.
    let response = rpc(&server.mcp, None, &call_body("nlq_to_data")).await;
    assert_eq!(response.status(), 401);
    let challenge = www_authenticate(&response);
    assert!(
        challenge.contains(
            "resource_metadata=\"https://mcp.example.test/.well-known/oauth-protected-resource/mcp\""
        ),
        "{challenge}"
    );
    assert!(!challenge.contains("error="), "{challenge}");

    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims(&iss, "lumenore:read");
        change(&mut c);
        c
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad signature",
            keys.attacker.sign(&claims(&iss, "lumenore:read")),
            "bad_signature",
        ),
        (
            "expired",
            keys.rsa.sign(&with(&|c| c["exp"] = json!(now() - 3600))),
            "expired",
        ),
        (
            "not yet valid",
            keys.rsa.sign(&with(&|c| c["nbf"] = json!(now() + 3600))),
            "not_yet_valid",
        ),
        (
            "wrong audience",
            keys.rsa
                .sign(&with(&|c| c["aud"] = json!("https://other.example.test/mcp"))),
            "wrong_audience",
        ),
        (
            "wrong issuer",
            keys.rsa
                .sign(&with(&|c| c["iss"] = json!("https://evil.example.test"))),
            "wrong_issuer",
        ),
        (
            "no subject",
            keys.rsa.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            })),
            "missing_claim",
        ),
        (
            "no audience",
            keys.rsa.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            })),
            "missing_claim",
        ),
        ("not a JWT", "not-a-jwt".to_string(), "malformed_token"),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(claims(&iss, "lumenore:read").to_string().as_bytes())
            ),
            "malformed_token",
        ),
        (
            "HS256 signed with the public key's bytes",
            hs256_token(&claims(&iss, "lumenore:read")),
            "disallowed_algorithm",
        ),
        (
            "RSA key named for an EC token",
            keys.ec
                .sign_with_kid(&claims(&iss, "lumenore:read"), Some("rsa-1"), Algorithm::ES256),
            "disallowed_algorithm",
        ),
    ];
    for (name, token, reason) in &cases {
        let (status, challenge) = status_and_challenge(&server.mcp, token).await;
        assert_eq!(status, 401, "{name}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(challenge.contains("resource_metadata="), "{name}: {challenge}");
        let metrics = server.metrics.encode();
        assert!(
            metric(
                &metrics,
                &format!("lumenore_connector_auth_failures_total{{reason=\"{reason}\"}}")
            ) >= 1,
            "{name}: no {reason} counted"
        );
    }
    assert!(tool_requests(&backend).await.is_empty());
    server.stop().await.unwrap();
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The classic confusion attack: an HMAC token whose secret is public material.
fn hs256_token(claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(b"public-key-bytes"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_scope_is_403_insufficient_scope_and_tools_list_is_filtered() {
    let keys = keys();
    let issuer = issuer(&[&keys.rsa]).await;
    let backend = backend(Duration::ZERO).await;
    let server = start(oauth_config(&backend.uri(), &issuer.uri()), static_token(), false).await;

    let metadata_only = keys.rsa.sign(&claims(&issuer.uri(), "lumenore:metadata"));
    let tools = listed_tools(rpc(&server.mcp, Some(&metadata_only), &list_body()).await).await;
    assert_eq!(tools, ["get_dataset_metadata", "get_metadata_info"]);
    let response = rpc(&server.mcp, Some(&metadata_only), &call_body("get_pareto_data")).await;
    assert_eq!(response.status(), 403);
    let challenge = www_authenticate(&response);
    assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
    assert!(challenge.contains("scope=\"lumenore:query\""), "{challenge}");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("get_pareto_data")
    );

    let query_only = keys.rsa.sign(&claims(&issuer.uri(), "lumenore:query"));
    let tools = listed_tools(rpc(&server.mcp, Some(&query_only), &list_body()).await).await;
    assert_eq!(tools.len(), 7);
    assert!(!tools.contains(&"get_metadata_info".to_string()));
    let response = rpc(&server.mcp, Some(&query_only), &call_body("get_metadata_info")).await;
    assert_eq!(response.status(), 403);
    assert!(www_authenticate(&response).contains("scope=\"lumenore:metadata\""));

    // No Lumenore scope at all: authenticated, but nothing to see or call.
    let none = keys.rsa.sign(&claims(&issuer.uri(), "openid profile"));
    assert!(
        listed_tools(rpc(&server.mcp, Some(&none), &list_body()).await)
            .await
            .is_empty()
    );
    let response = rpc(&server.mcp, Some(&none), &call_body("get_dataset_metadata")).await;
    assert_eq!(response.status(), 403);

    assert!(tool_requests(&backend).await.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_resource_metadata_is_published_at_both_paths() {
    let keys = keys();
    let issuer = issuer(&[&keys.rsa]).await;
    let backend = backend(Duration::ZERO).await;
    let server = start(oauth_config(&backend.uri(), &issuer.uri()), static_token(), false).await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let response = reqwest::get(format!("{}{path}", server.base)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let document: Value = response.json().await.unwrap();
        assert_eq!(document["resource"], PUBLIC_URL);
        assert_eq!(document["authorization_servers"], json!([issuer.uri()]));
        assert_eq!(
            document["scopes_supported"],
            json!(["lumenore:read", "lumenore:metadata", "lumenore:query"])
        );
        assert_eq!(document["bearer_methods_supported"], json!(["header"]));
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refetches_the_jwks_once_and_a_flood_is_throttled() {
    let keys = keys();
    let issuer = issuer(&[&keys.rsa]).await;
    let backend = backend(Duration::ZERO).await;
    let server = start(oauth_config(&backend.uri(), &issuer.uri()), static_token(), false).await;
    wait_for_first_fetch(&issuer).await;
    let iss = issuer.uri();

    let old = keys.rsa.sign(&claims(&iss, "lumenore:read"));
    assert_eq!(status_and_challenge(&server.mcp, &old).await.0, 200);
    assert_eq!(jwks_fetches(&issuer).await, 1, "a known kid must not refetch");

    // The issuer rotates: rsa-2 appears in its JWKS. A token signed with it makes one refetch.
    issuer.reset().await;
    mount_discovery(&issuer).await;
    mount_jwks(&issuer, &[&keys.rsa, &keys.rotated]).await;
    let rotated = keys.rotated.sign(&claims(&iss, "lumenore:read"));
    assert_eq!(status_and_challenge(&server.mcp, &rotated).await.0, 200);
    assert_eq!(
        jwks_fetches(&issuer).await,
        1,
        "exactly one refetch after the rotation"
    );
    // Both keys are now cached.
    assert_eq!(status_and_challenge(&server.mcp, &old).await.0, 200);
    assert_eq!(status_and_challenge(&server.mcp, &rotated).await.0, 200);
    assert_eq!(jwks_fetches(&issuer).await, 1);

    // A flood of random kids: every token is refused, and the issuer sees at most the refresh budget
    // (3 in a burst, then one per 10 s), not one fetch per token.
    let floods: Vec<_> = (0..40)
        .map(|i| {
            keys.rotated.sign_with_kid(
                &claims(&iss, "lumenore:read"),
                Some(&format!("random-{i}")),
                Algorithm::RS256,
            )
        })
        .collect();
    let results = futures::future::join_all(
        floods
            .iter()
            .map(|token| status_and_challenge(&server.mcp, token)),
    )
    .await;
    assert!(
        results
            .iter()
            .all(|(status, challenge)| *status == 401 && challenge.contains("error=\"invalid_token\""))
    );
    let fetches = jwks_fetches(&issuer).await;
    assert!(fetches <= 3, "{fetches} JWKS fetches for 40 unknown kids");
    let metrics = server.metrics.encode();
    assert_eq!(
        metric(
            &metrics,
            "lumenore_connector_auth_failures_total{reason=\"unknown_key_id\"}"
        ),
        40
    );
    // Whether the concurrent flood itself hits the budget depends on timing: requests that waited for one
    // refetch share its result. Unknown kids one after another each need a refetch of their own, so the
    // budget (3 in a burst) runs out within a few.
    for i in 0..5 {
        let token = keys.rotated.sign_with_kid(
            &claims(&iss, "lumenore:read"),
            Some(&format!("sequential-{i}")),
            Algorithm::RS256,
        );
        assert_eq!(status_and_challenge(&server.mcp, &token).await.0, 401);
    }
    let fetches = jwks_fetches(&issuer).await;
    assert!(fetches <= 3, "{fetches} JWKS fetches for 45 unknown kids");
    let metrics = server.metrics.encode();
    assert!(
        metric(
            &metrics,
            "lumenore_connector_jwks_fetches_total{outcome=\"throttled\"}"
        ) >= 1
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_jwks_url_skips_discovery_and_an_unreachable_issuer_is_503() {
    let keys = keys();
    // The issuer publishes no discovery document: only the configured JWKS URL works.
    let issuer = MockServer::start().await;
    mount_jwks(&issuer, &[&keys.ec]).await;
    let backend = backend(Duration::ZERO).await;
    let mut config = oauth_config(&backend.uri(), &issuer.uri());
    config.oauth_jwks_url = Some(format!("{}/jwks", issuer.uri()).parse().unwrap());
    let server = start(config, static_token(), false).await;
    let token = keys.ec.sign(&claims(&issuer.uri(), "lumenore:read"));
    assert_eq!(status_and_challenge(&server.mcp, &token).await.0, 200);
    server.stop().await.unwrap();

    // No JWKS anywhere: the caller is told to retry (503), not that its token is bad.
    let empty = MockServer::start().await;
    let server = start(oauth_config(&backend.uri(), &empty.uri()), static_token(), false).await;
    let token = keys.rsa.sign(&claims(&empty.uri(), "lumenore:read"));
    let response = rpc(&server.mcp, Some(&token), &list_body()).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_absent_in_other_modes() {
    let backend = backend(Duration::ZERO).await;
    let server = start(support::config_for(&backend.uri()), static_token(), false).await;
    let response = reqwest::get(format!("{}/.well-known/oauth-protected-resource", server.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    server.stop().await.unwrap();
}
