//! The nine tools (names kept from the original Python server so existing prompts keep working), the six
//! analysis kinds, and one validated tool call.

/// The analysis tools: they share one argument shape and one backend endpoint family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnalysisKind {
    Trend,
    Prediction,
    Outlier,
    Correlation,
    Change,
    Pareto,
}

impl AnalysisKind {
    pub const ALL: [AnalysisKind; 6] = [
        AnalysisKind::Trend,
        AnalysisKind::Prediction,
        AnalysisKind::Outlier,
        AnalysisKind::Correlation,
        AnalysisKind::Change,
        AnalysisKind::Pareto,
    ];

    /// The kind's short name (metric labels, the embedded engine's evaluation sets).
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisKind::Trend => "trend",
            AnalysisKind::Prediction => "prediction",
            AnalysisKind::Outlier => "outlier",
            AnalysisKind::Correlation => "correlation",
            AnalysisKind::Change => "change",
            AnalysisKind::Pareto => "pareto",
        }
    }

    /// The MCP tool answering this kind.
    pub fn tool(self) -> &'static str {
        ToolName::Analysis(self).as_str()
    }
}

/// One of the nine tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ToolName {
    GetDatasetMetadata,
    GetMetadataInfo,
    NlqToData,
    Analysis(AnalysisKind),
}

impl ToolName {
    pub const ALL: [ToolName; 9] = [
        ToolName::GetDatasetMetadata,
        ToolName::GetMetadataInfo,
        ToolName::NlqToData,
        ToolName::Analysis(AnalysisKind::Trend),
        ToolName::Analysis(AnalysisKind::Prediction),
        ToolName::Analysis(AnalysisKind::Outlier),
        ToolName::Analysis(AnalysisKind::Correlation),
        ToolName::Analysis(AnalysisKind::Change),
        ToolName::Analysis(AnalysisKind::Pareto),
    ];

    /// The tool's MCP name.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolName::GetDatasetMetadata => "get_dataset_metadata",
            ToolName::GetMetadataInfo => "get_metadata_info",
            ToolName::NlqToData => "nlq_to_data",
            ToolName::Analysis(AnalysisKind::Trend) => "get_trend_data",
            ToolName::Analysis(AnalysisKind::Prediction) => "get_prediction_data",
            ToolName::Analysis(AnalysisKind::Outlier) => "get_outlier_data",
            ToolName::Analysis(AnalysisKind::Correlation) => "get_correlation_data",
            ToolName::Analysis(AnalysisKind::Change) => "get_change_data",
            ToolName::Analysis(AnalysisKind::Pareto) => "get_pareto_data",
        }
    }

    /// The tool of an MCP name, if it is one of the nine.
    pub fn parse(name: &str) -> Option<ToolName> {
        ToolName::ALL.into_iter().find(|tool| tool.as_str() == name)
    }
}

/// One tool call, parsed once: the tool and its validated arguments in one value, so a tool can never be
/// paired with another tool's arguments. The connector's validation makes it; both backends answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolCall {
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

impl ToolCall {
    pub fn tool(&self) -> ToolName {
        match self {
            ToolCall::DatasetMetadata => ToolName::GetDatasetMetadata,
            ToolCall::MetadataInfo { .. } => ToolName::GetMetadataInfo,
            ToolCall::NlqToData { .. } => ToolName::NlqToData,
            ToolCall::Analysis { kind, .. } => ToolName::Analysis(*kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for tool in ToolName::ALL {
            assert_eq!(ToolName::parse(tool.as_str()), Some(tool));
            assert!(seen.insert(tool.as_str()), "{} twice", tool.as_str());
        }
        assert_eq!(ToolName::parse("drop_tables"), None);
        assert_eq!(ToolName::parse("GET_TREND_DATA"), None);
    }

    #[test]
    fn every_analysis_kind_is_one_tool() {
        for kind in AnalysisKind::ALL {
            assert!(ToolName::ALL.contains(&ToolName::Analysis(kind)));
            assert_eq!(ToolName::parse(kind.tool()), Some(ToolName::Analysis(kind)));
        }
    }

    #[test]
    fn a_call_names_its_tool() {
        let call = ToolCall::Analysis {
            kind: AnalysisKind::Pareto,
            user_query: "q".into(),
            schema_id: 7,
        };
        assert_eq!(call.tool(), ToolName::Analysis(AnalysisKind::Pareto));
        assert_eq!(
            ToolCall::MetadataInfo { schema_id: 7 }.tool(),
            ToolName::GetMetadataInfo
        );
    }
}
