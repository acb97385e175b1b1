//! OAuth scopes and the tools they allow.
//!
//! | scope | tools |
//! |---|---|
//! | `lumenore:read` | all nine tools |
//! | `lumenore:metadata` | `get_dataset_metadata`, `get_metadata_info` |
//! | `lumenore:query` | `nlq_to_data` and the six `get_*_data` analysis tools |
//!
//! Other scopes in a token are ignored. A token without any of these scopes authenticates but may call
//! nothing: `tools/list` is empty and every `tools/call` is 403 `insufficient_scope`.

use super::ToolSet;
use crate::tools::ToolName;

pub const SCOPE_READ: &str = "lumenore:read";
pub const SCOPE_METADATA: &str = "lumenore:metadata";
pub const SCOPE_QUERY: &str = "lumenore:query";

/// Every scope this connector understands, as published in the protected-resource metadata.
pub const SUPPORTED: [&str; 3] = [SCOPE_READ, SCOPE_METADATA, SCOPE_QUERY];

fn is_metadata_tool(tool: ToolName) -> bool {
    matches!(tool, ToolName::GetDatasetMetadata | ToolName::GetMetadataInfo)
}

/// The tools one scope allows.
pub fn tools_of_scope(scope: &str) -> ToolSet {
    match scope {
        SCOPE_READ => ToolSet::ALL,
        SCOPE_METADATA => ToolSet::of(ToolName::ALL.into_iter().filter(|t| is_metadata_tool(*t))),
        SCOPE_QUERY => ToolSet::of(ToolName::ALL.into_iter().filter(|t| !is_metadata_tool(*t))),
        _ => ToolSet::EMPTY,
    }
}

/// The tools a token's scopes allow together.
pub fn tools_of_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> ToolSet {
    scopes
        .into_iter()
        .fold(ToolSet::EMPTY, |set, scope| set.union(tools_of_scope(scope)))
}

/// The narrowest scope that allows `tool`: named in the `insufficient_scope` challenge.
pub fn scope_for(tool: ToolName) -> &'static str {
    if is_metadata_tool(tool) {
        SCOPE_METADATA
    } else {
        SCOPE_QUERY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::AnalysisKind;

    #[test]
    fn mapping_is_as_documented() {
        assert_eq!(tools_of_scope(SCOPE_READ), ToolSet::ALL);
        let metadata = tools_of_scope(SCOPE_METADATA);
        assert_eq!(
            metadata.iter().map(ToolName::as_str).collect::<Vec<_>>(),
            ["get_dataset_metadata", "get_metadata_info"]
        );
        let query = tools_of_scope(SCOPE_QUERY);
        assert_eq!(query.iter().count(), 7);
        assert!(query.contains(ToolName::NlqToData));
        assert!(query.contains(ToolName::Analysis(AnalysisKind::Pareto)));
        assert!(!query.contains(ToolName::GetMetadataInfo));
        assert_eq!(metadata.union(query), ToolSet::ALL);
        assert!(tools_of_scope("openid").is_empty());
        assert!(tools_of_scope("lumenore:READ").is_empty());
        assert_eq!(
            tools_of_scopes(["openid", SCOPE_METADATA, SCOPE_QUERY]),
            ToolSet::ALL
        );
    }

    #[test]
    fn each_tool_is_allowed_by_the_scope_named_for_it() {
        for tool in ToolName::ALL {
            assert!(tools_of_scope(scope_for(tool)).contains(tool));
        }
    }
}
