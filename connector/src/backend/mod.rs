//! Where answers come from. Two backends answer the same calls: the tenant's Lumenore server over HTTPS,
//! and the embedded engine over local datasets.

#[cfg(feature = "embedded")]
pub mod embedded;
pub mod lumenore;

use std::time::Duration;

use tokio::sync::mpsc;

use crate::tools::{ToolCall, envelope::Answer};

/// Progress of a streamed answer: bytes received so far.
pub type ProgressSender = mpsc::UnboundedSender<u64>;

/// Why a backend call failed. The connector's own texts are fixed words plus numbers: they never carry a
/// query, schema id, URL, body or credential. Some failures also carry the backend's own message (`detail`):
/// it is bounded, has the caller's question, the schema id and the credentials removed, and is returned to
/// the caller only — never logged, never a metric label, never on /readyz (see [`BackendError::summary`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error(
        "no Lumenore credentials are configured: set LUMENORE_CLIENT_ID and LUMENORE_SECRET, or LUMENORE_API_KEY"
    )]
    NotConfigured,
    #[error("the Lumenore backend rejected the connector's credentials{}", detail_suffix(.0))]
    CredentialsRejected(Option<String>),
    /// A token the backend issued moments ago was refused again: logging in once more would only make a
    /// login per call, so the connector waits.
    #[error(
        "the Lumenore backend rejected a token it issued less than {} ago{}; the connector logs in again after that",
        humantime::format_duration(*.backoff),
        detail_suffix(.detail)
    )]
    TokenRejectedRecently {
        backoff: Duration,
        detail: Option<String>,
    },
    #[error("the Lumenore backend login answered without an access_token cookie")]
    LoginWithoutToken,
    /// The whole request took longer than the total timeout.
    #[error("the Lumenore backend did not finish answering within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The backend sent nothing for the read timeout (before the headers or between parts of the body).
    #[error("the Lumenore backend sent nothing for {}", humantime::format_duration(*.0))]
    Stalled(Duration),
    #[error("the Lumenore backend could not be reached")]
    Unreachable,
    /// The connection broke before the answer was complete (a reset in the middle of the body).
    #[error("the connection to the Lumenore backend broke before the answer was complete")]
    ConnectionLost,
    #[error("the Lumenore backend answered HTTP {code}{}", detail_suffix(.1), code = .0)]
    Status(u16, Option<String>),
    #[error("the Lumenore backend sent a response that is not valid JSON{}", detail_suffix(.0))]
    Malformed(Option<String>),
    #[error("the backend response is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the call was cancelled")]
    Cancelled,
    /// The embedded engine refused the question or the schema id: the caller can fix it.
    #[error("{0}")]
    Refused(String),
    /// The embedded engine failed.
    #[error("the embedded analytics engine failed: {0}")]
    Engine(String),
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(detail) => format!(": {detail}"),
        None => String::new(),
    }
}

impl crate::otel::ErrorClass for BackendError {
    fn class(&self) -> &'static str {
        BackendError::class(self)
    }
}

impl BackendError {
    /// A fixed label for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            BackendError::NotConfigured => "not_configured",
            BackendError::CredentialsRejected(_)
            | BackendError::TokenRejectedRecently { .. }
            | BackendError::LoginWithoutToken => "unauthorized",
            BackendError::Timeout(_) | BackendError::Stalled(_) => "timeout",
            BackendError::Unreachable => "unreachable",
            BackendError::ConnectionLost => "connection_lost",
            BackendError::Status(code, _) if *code >= 500 => "http_5xx",
            BackendError::Status(..) => "http_4xx",
            BackendError::Malformed(_) => "malformed",
            BackendError::TooLarge(_) => "too_large",
            BackendError::Cancelled => "cancelled",
            BackendError::Refused(_) => "refused",
            BackendError::Engine(_) => "engine",
        }
    }

    /// Whether the caller can fix it by changing the arguments.
    pub fn is_caller_error(&self) -> bool {
        matches!(self, BackendError::Refused(_))
    }

    /// The error without the backend's own message: what may be logged and shown on /readyz.
    pub fn summary(&self) -> String {
        let without_detail = match self {
            BackendError::CredentialsRejected(_) => BackendError::CredentialsRejected(None),
            BackendError::TokenRejectedRecently { backoff, .. } => BackendError::TokenRejectedRecently {
                backoff: *backoff,
                detail: None,
            },
            BackendError::Status(code, _) => BackendError::Status(*code, None),
            BackendError::Malformed(_) => BackendError::Malformed(None),
            other => other.clone(),
        };
        without_detail.to_string()
    }
}

/// Whether the backend is usable, and if not, why (safe to show on /readyz).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

/// The configured backend.
pub enum Backend {
    Lumenore(Box<lumenore::LumenoreBackend>),
    #[cfg(feature = "embedded")]
    Embedded(embedded::EmbeddedBackend),
}

impl Backend {
    /// Answers one validated call, the very value the handler's validation produced. A Lumenore answer may be text or already cut to the result limits while it was
    /// read; [`crate::tools::envelope::success`] takes it as it is.
    pub async fn call(
        &self,
        call: ToolCall,
        progress: Option<ProgressSender>,
    ) -> Result<Answer, BackendError> {
        match self {
            Backend::Lumenore(backend) => backend.call(call, progress).await,
            #[cfg(feature = "embedded")]
            Backend::Embedded(backend) => backend.call(call).await.map(Answer::from),
        }
    }

    pub async fn check_readiness(&self) -> Readiness {
        match self {
            Backend::Lumenore(backend) => backend.check_readiness().await,
            #[cfg(feature = "embedded")]
            Backend::Embedded(_) => Readiness::Ready,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Lumenore(_) => "lumenore",
            #[cfg(feature = "embedded")]
            Backend::Embedded(_) => "embedded",
        }
    }
}
