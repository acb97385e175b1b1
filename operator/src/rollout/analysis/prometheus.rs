//! A Prometheus-compatible query API client: instant queries (`POST <url>/api/v1/query`), with the
//! credentials and CA bundle of `spec.analysis.prometheus` read from their Secrets for each analysis
//! (never kept between analyses, never logged).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Deserialize;

use super::super::crd::PrometheusSource;

/// How the query API is reached.
pub struct QueryApi {
    http: reqwest::Client,
    endpoint: String,
    auth: Option<String>,
}

/// One series of an instant vector (or a scalar, with no labels).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

/// Prometheus writes sample values as strings: numbers, `NaN`, `+Inf`, `-Inf`.
fn number(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse()
            .map_err(|_| format!("the answer holds a value that is not a number: {s:?}")),
    }
}

/// Decode an `/api/v1/query` answer body into samples.
pub fn decode(body: &[u8]) -> Result<Vec<Sample>, String> {
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not the query API's JSON: {e}"))?;
    if a.status != "success" {
        return Err(format!(
            "the query API answered {} ({}): {}",
            a.status,
            a.error_type.unwrap_or_default(),
            super::super::truncate(a.error.unwrap_or_default(), 200)
        ));
    }
    let data = a.data.ok_or("the answer has no data")?;
    match data.result_type.as_str() {
        "vector" => {
            let items: Vec<VectorItem> = serde_json::from_value(data.result)
                .map_err(|e| format!("the vector answer is malformed: {e}"))?;
            items
                .into_iter()
                .map(|i| {
                    Ok(Sample {
                        labels: i.metric,
                        value: number(&i.value.1)?,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| format!("the scalar answer is malformed: {e}"))?;
            Ok(vec![Sample {
                labels: Default::default(),
                value: number(&v)?,
            }])
        }
        other => Err(format!(
            "the query gave a {other}; an analysis query gives a vector or a scalar"
        )),
    }
}

/// The label a Secret must carry for an analysis to send its values anywhere: whoever may edit a
/// rollout but not read Secrets cannot make the operator send an arbitrary Secret to a URL of their
/// choosing.
pub const SECRET_LABEL: &str = "lumenore.io/fleet-analysis";

/// Largest answer read from the query API: a custom query over many series must not exhaust memory.
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// Read a key of a Secret of `api`'s namespace (labelled [`SECRET_LABEL`]`: "true"`).
async fn secret_value(api: &Api<Secret>, name: &str, key: &str) -> Result<Vec<u8>, String> {
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| format!("cannot read Secret {name}: {e}"))?
        .ok_or_else(|| format!("Secret {name} not found"))?;
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SECRET_LABEL))
        .is_some_and(|v| v == "true");
    if !labelled {
        return Err(format!(
            "Secret {name} is not labelled {SECRET_LABEL}=\"true\" (rule: an analysis sends only the values of Secrets labelled for it)"
        ));
    }
    secret
        .data
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("Secret {name} has no key {key} (or it is empty)"))
}

impl QueryApi {
    /// The client for `source`, its Secrets read from `secrets` (the operator's namespace).
    pub async fn connect(source: &PrometheusSource, secrets: &Api<Secret>) -> Result<QueryApi, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(u64::from(source.timeout_seconds).min(5)))
            .timeout(Duration::from_secs(u64::from(source.timeout_seconds)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lumenore-operator/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &source.ca_secret_ref {
            let pem = secret_value(secrets, &ca.name, &ca.key).await?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| format!("Secret {} key {}: not a PEM CA bundle", ca.name, ca.key))?;
            builder = builder.tls_certs_only(certs);
        }
        let auth = if let Some(r) = &source.bearer_token_secret_ref {
            let token = secret_value(secrets, &r.name, &r.key).await?;
            let token = String::from_utf8(token)
                .map_err(|_| format!("Secret {} key {}: not UTF-8", r.name, r.key))?;
            Some(format!("Bearer {}", token.trim()))
        } else if let Some(r) = &source.basic_auth_secret_ref {
            use base64::Engine as _;
            let user = secret_value(secrets, &r.name, "username").await?;
            let pass = secret_value(secrets, &r.name, "password").await?;
            let mut pair = user;
            pair.push(b':');
            pair.extend_from_slice(&pass);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(&pair)
            ))
        } else {
            None
        };
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client for the query API: {e}"))?;
        Ok(QueryApi {
            http,
            endpoint: format!("{}/api/v1/query", source.url.trim_end_matches('/')),
            auth,
        })
    }

    /// Evaluate `promql` at `at` (seconds since the epoch). The query is parsed first: one that does
    /// not parse is never sent.
    pub async fn query(&self, promql: &str, at: i64) -> Result<Vec<Sample>, String> {
        super::query::parse(promql)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .append_pair("time", &at.to_string())
            .finish();
        let mut req = self
            .http
            .post(&self.endpoint)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some(a) = &self.auth {
            let mut value = http::HeaderValue::from_str(a)
                .map_err(|_| "the query API credential is not a valid header value".to_string())?;
            value.set_sensitive(true);
            req = req.header(http::header::AUTHORIZATION, value);
        }
        let mut resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                "the query API did not answer in time".to_string()
            } else if e.is_connect() {
                "cannot connect to the query API".to_string()
            } else {
                format!("the query API call failed: {}", e.without_url())
            }
        })?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("the query API's answer was cut: {}", e.without_url()))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "the query API's answer is larger than {} MiB: a check's query must aggregate",
                    MAX_ANSWER_BYTES >> 20
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        // Prometheus answers 400/422/503 with its JSON error body: decode it for the reason.
        match decode(&bytes) {
            Ok(samples) if status.is_success() => Ok(samples),
            Ok(_) => Err(format!("the query API answered HTTP {status}")),
            Err(e) if status.is_success() => Err(e),
            Err(e) if e.starts_with("the query API answered") => Err(format!("HTTP {status}: {e}")),
            Err(_) => Err(format!("the query API answered HTTP {status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decode_with_nan_and_infinities() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"outcome":"error"},"value":[1.5,"3"]},{"metric":{},"value":[1.5,"NaN"]},{"metric":{},"value":[1.5,"+Inf"]}]}}"#;
        let s = decode(v).unwrap();
        assert_eq!(s[0].labels.get("outcome").map(String::as_str), Some("error"));
        assert_eq!(s[0].value, 3.0);
        assert!(s[1].value.is_nan());
        assert_eq!(s[2].value, f64::INFINITY);
        let sc =
            decode(br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"0.25"]}}"#).unwrap();
        assert_eq!(sc[0].value, 0.25);
        let err = decode(br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#).unwrap_err();
        assert!(err.contains("bad_data") && err.contains("parse error"), "{err}");
        assert!(decode(br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#).is_err());
        assert!(decode(b"<html>").is_err());
    }
}
