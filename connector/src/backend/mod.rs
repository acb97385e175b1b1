//! Where answers come from. Two backends answer the same calls: the tenant's Lumenore server over HTTPS,
//! and the embedded engine over local datasets.

pub mod embedded;
pub mod lumenore;

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::tools::{AnalysisKind, ToolArgs, ToolName};

/// A validated request to a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendCall {
    DatasetMetadata,
    MetadataInfo {
        schema_id: i64,
    },
    NlqToData {
        user_query: String,
        schema_id: i64,
    },
    Analysis {
        kind: AnalysisKind,
        user_query: String,
        schema_id: i64,
    },
}

impl BackendCall {
    pub fn from_tool(tool: ToolName, args: ToolArgs) -> Option<Self> {
        match (tool, args) {
            (ToolName::GetDatasetMetadata, ToolArgs::None) => Some(BackendCall::DatasetMetadata),
            (ToolName::GetMetadataInfo, ToolArgs::Schema { schema_id }) => {
                Some(BackendCall::MetadataInfo { schema_id })
            }
            (
                ToolName::NlqToData,
                ToolArgs::Query {
                    user_query,
                    schema_id,
                },
            ) => Some(BackendCall::NlqToData {
                user_query,
                schema_id,
            }),
            (
                ToolName::Analysis(kind),
                ToolArgs::Query {
                    user_query,
                    schema_id,
                },
            ) => Some(BackendCall::Analysis {
                kind,
                user_query,
                schema_id,
            }),
            _ => None,
        }
    }
}

/// Progress of a streamed answer: bytes received so far.
pub type ProgressSender = mpsc::UnboundedSender<u64>;

/// Why a backend call failed. Messages are fixed texts plus numbers: they never carry a query, schema id,
/// URL, body or credential, so they are safe to return to the caller and to count in metrics.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error(
        "no Lumenore credentials are configured: set LUMENORE_CLIENT_ID and LUMENORE_SECRET, or LUMENORE_API_KEY"
    )]
    NotConfigured,
    #[error("the Lumenore backend rejected the connector's credentials")]
    CredentialsRejected,
    #[error("the Lumenore backend login answered without an access_token cookie")]
    LoginWithoutToken,
    #[error("the Lumenore backend did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the Lumenore backend could not be reached")]
    Unreachable,
    #[error("the Lumenore backend answered HTTP {0}")]
    Status(u16),
    #[error("the Lumenore backend sent a response that is not valid JSON")]
    Malformed,
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

impl BackendError {
    /// A fixed label for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            BackendError::NotConfigured => "not_configured",
            BackendError::CredentialsRejected | BackendError::LoginWithoutToken => "unauthorized",
            BackendError::Timeout(_) => "timeout",
            BackendError::Unreachable => "unreachable",
            BackendError::Status(code) if *code >= 500 => "http_5xx",
            BackendError::Status(_) => "http_4xx",
            BackendError::Malformed => "malformed",
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
    Embedded(embedded::EmbeddedBackend),
}

impl Backend {
    pub async fn call(
        &self,
        call: BackendCall,
        progress: Option<ProgressSender>,
    ) -> Result<Value, BackendError> {
        match self {
            Backend::Lumenore(backend) => backend.call(call, progress).await,
            Backend::Embedded(backend) => backend.call(call).await,
        }
    }

    pub async fn check_readiness(&self) -> Readiness {
        match self {
            Backend::Lumenore(backend) => backend.check_readiness().await,
            Backend::Embedded(_) => Readiness::Ready,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Lumenore(_) => "lumenore",
            Backend::Embedded(_) => "embedded",
        }
    }
}
