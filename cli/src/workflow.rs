//! `comfy-proxy workflow flux|qwen-image`: prints a built-in graph in API format.

use std::process::ExitCode;

use crate::error::{Result, runtime};
use crate::model::Model;

/// Builds the graph (a random seed unless `--seed`) and prints it, pretty, on stdout.
pub fn run(model: &Model) -> Result<ExitCode> {
    let seed = model.seed().unwrap_or_else(|| fastrand::u64(..));
    let graph = model.build(seed)?;
    let text = serde_json::to_string_pretty(&graph.to_json())
        .map_err(|e| runtime(format!("cannot write the graph: {e}")))?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
