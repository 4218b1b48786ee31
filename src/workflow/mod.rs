//! Workflows. (Being written.)
/// An API-format graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow;
/// A bad workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowError;
