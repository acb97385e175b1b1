//! The operator's Kubernetes client: every request must get its response within a time limit, so a
//! half-open connection or a stuck API server cannot hold a reconcile or a lease renewal forever.
//! (kube 5 sets no read timeout by default.) The limit covers the wait for the response head; a
//! watch answers at once and then streams, so long watches are not cut.

use std::time::Duration;

use kube::Client;
use kube::client::ClientBuilder;
use tower::timeout::TimeoutLayer;

/// Default time limit of one API request.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(30);

/// The layer bounding every request to `timeout`.
pub fn api_timeout_layer(timeout: Duration) -> TimeoutLayer {
    TimeoutLayer::new(timeout)
}

/// A client from the in-cluster config or KUBECONFIG, with every request bounded by `timeout`.
pub async fn build(timeout: Duration) -> Result<Client, kube::Error> {
    let config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&api_timeout_layer(timeout))
        .build())
}
