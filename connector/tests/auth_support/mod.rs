//! Helpers shared by the auth_* tests: a mock Lumenore backend that records what it receives, keys files,
//! a mock OAuth issuer (discovery document and JWKS) and JWTs signed with the test keys in tests/fixtures.
#![allow(dead_code)]

use std::{path::Path, time::Duration};

use crate::support::config_for;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use lumenore_connector::{
    auth::api_keys::hash_line,
    backend::lumenore::Credentials,
    config::{AuthMode, Config},
};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path, path_regex},
};

/// The connector's own backend token: the only credential the backend may ever see.
pub const BACKEND_TOKEN: &str = "connector-own-backend-token";

pub fn static_token() -> Credentials {
    Credentials::StaticToken(SecretString::from(BACKEND_TOKEN))
}

/// A Lumenore backend answering every tool at once (or after `delay`).
pub async fn backend(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path_regex("^/api/(askme-manager|ai-engine)/.*"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"rows": [["east", 1]]}))
                .set_delay(delay),
        )
        .mount(&server)
        .await;
    server
}

/// Requests the backend received on the tool endpoints.
pub async fn tool_requests(server: &MockServer) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().starts_with("/api/"))
        .collect()
}

/// Asserts that no request the backend received carries `secret` in any header or body, and that every
/// request carried the connector's own token.
pub async fn assert_backend_never_saw(server: &MockServer, secret: &str) {
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(
        !requests.is_empty(),
        "the backend received nothing: the check proves nothing"
    );
    for request in requests {
        for (name, value) in request.headers.iter() {
            let value = value.to_str().unwrap_or_default();
            assert!(
                !value.contains(secret),
                "the backend saw the caller's credential in header {name}"
            );
        }
        assert!(
            !String::from_utf8_lossy(&request.body).contains(secret),
            "the backend saw the caller's credential in a body"
        );
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // The static LUMENORE_API_KEY is sent as the whole Authorization value, as the original server does.
        assert_eq!(authorization, BACKEND_TOKEN);
    }
}

/// A keys-file entry.
pub fn key_entry(id: &str, key: &str, tools: &str, revoked: bool) -> String {
    format!(
        "  - id: {id}\n    hash: {}\n    tools: {tools}\n    revoked: {revoked}\n",
        hash_line(key)
    )
}

pub fn write_keys(path: &Path, entries: &[String]) {
    std::fs::write(path, format!("keys:\n{}", entries.concat())).unwrap();
}

pub fn api_keys_config(backend: &str, keys_file: &Path) -> Config {
    let mut config = config_for(backend);
    config.auth_mode = AuthMode::ApiKeys;
    config.api_keys_file = Some(keys_file.to_path_buf());
    config.api_keys_reload_interval = Duration::from_millis(100);
    config
}

/// The public URL the OAuth tests configure (the audience by default).
pub const PUBLIC_URL: &str = "https://mcp.example.test/mcp";

pub fn oauth_config(backend: &str, issuer: &str) -> Config {
    let mut config = config_for(backend);
    config.auth_mode = AuthMode::Oauth;
    config.oauth_issuer = Some(issuer.to_string());
    config.public_url = Some(PUBLIC_URL.to_string());
    config
}

/// A test signing key from tests/fixtures.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

impl TestKey {
    pub fn rsa(file: &str, kid: &str) -> TestKey {
        TestKey {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(&fixture(file)).unwrap(),
        }
    }

    pub fn ec(file: &str, kid: &str) -> TestKey {
        TestKey {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(&fixture(file)).unwrap(),
        }
    }

    /// The public JWK of this key, as an issuer publishes it.
    pub fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        serde_json::to_value(jwk).unwrap()
    }

    /// Signs `claims` with this key, naming `kid` in the header.
    pub fn sign_with_kid(&self, claims: &Value, kid: Option<&str>, alg: Algorithm) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(claims, Some(&self.kid), self.alg)
    }
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a valid token for `issuer` with `scope`.
pub fn claims(issuer: &str, scope: &str) -> Value {
    json!({
        "iss": issuer,
        "aud": PUBLIC_URL,
        "sub": "user-7f3a",
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 600,
        "scope": scope,
    })
}

/// A mock issuer: OpenID discovery at /.well-known/openid-configuration and the JWKS at /jwks.
pub async fn issuer(keys: &[&TestKey]) -> MockServer {
    let server = MockServer::start().await;
    mount_discovery(&server).await;
    mount_jwks(&server, keys).await;
    server
}

pub async fn mount_discovery(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": server.uri(),
            "jwks_uri": format!("{}/jwks", server.uri()),
        })))
        .mount(server)
        .await;
}

pub async fn mount_jwks(server: &MockServer, keys: &[&TestKey]) {
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks(keys)))
        .mount(server)
        .await;
}

pub async fn jwks_fetches(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/jwks")
        .count()
}

/// JSON-RPC over HTTP with an optional bearer credential.
pub async fn rpc(url: &str, bearer: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.expect("request sent")
}

pub fn call_body(tool: &str) -> Value {
    let arguments = if tool == "get_dataset_metadata" {
        json!({})
    } else if tool == "get_metadata_info" {
        json!({"schemaId": 35403})
    } else {
        json!({"userQuery": "total sales by region", "schemaId": 35403})
    };
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
}

pub fn list_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
}

/// The tool names of a tools/list answer.
pub async fn listed_tools(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.unwrap();
    value["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {value}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

pub fn www_authenticate(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

pub fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
