//! `comfy-proxy run FILE`: runs any workflow file (API or UI-format JSON, or a PNG or WebP saved
//! by ComfyUI) on the pool, with inputs set from the command line, a fresh seed per job, and
//! uploads to the server that runs each job. A UI-format workflow is converted with the first
//! server's object_info.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use comfy_proxy::{NodeId, Workflow};
use comfy_proxy_driver::pool::Upload;
use serde_json::Value;

use crate::error::{Result, runtime, usage};
use crate::jobs::{self, JobArgs, Plan};

/// The flags of `run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The workflow: API-format JSON ("Export (API)"), UI-format JSON ("Save"), or a PNG or
    /// WebP saved by ComfyUI.
    #[arg(value_name = "FILE")]
    pub graph: PathBuf,
    /// Set an input: TARGET is a node id, title or class type; VALUE is read as JSON when it
    /// parses (42, 1.5, true, "text", [..]), else taken as a string. Repeatable.
    #[arg(long = "set", value_name = "TARGET.INPUT=VALUE", value_parser = parse_set)]
    pub sets: Vec<(String, Value)>,
    /// Upload the file at PATH to the server and set input TARGET.INPUT to its name there.
    /// Needs a single --server for now. Repeatable.
    #[arg(long = "upload", value_name = "TARGET.INPUT=PATH", value_parser = parse_upload)]
    pub uploads: Vec<(String, PathBuf)>,
    #[command(flatten)]
    pub jobs: JobArgs,
}

fn parse_set(text: &str) -> std::result::Result<(String, Value), String> {
    let (path, value) = split_path(text, "TARGET.INPUT=VALUE")?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((path.to_owned(), value))
}

fn parse_upload(text: &str) -> std::result::Result<(String, PathBuf), String> {
    let (path, file) = split_path(text, "TARGET.INPUT=PATH")?;
    if file.is_empty() {
        return Err("the file PATH is empty; write TARGET.INPUT=PATH".into());
    }
    Ok((path.to_owned(), PathBuf::from(file)))
}

/// Splits `TARGET.INPUT=REST` at the first `=`, checking the path has both parts.
fn split_path<'a>(text: &'a str, form: &str) -> std::result::Result<(&'a str, &'a str), String> {
    let (path, rest) = text
        .split_once('=')
        .ok_or_else(|| format!("no '=' in {text:?}; write {form}"))?;
    match path.rsplit_once('.') {
        Some((target, input)) if !target.is_empty() && !input.is_empty() => Ok((path, rest)),
        _ => Err(format!("{path:?} is not TARGET.INPUT; write {form}")),
    }
}

/// The node id and input a `TARGET.INPUT` path names in `wf`.
fn resolve(wf: &Workflow, path: &str) -> Result<(NodeId, String)> {
    let (target, input) = path
        .rsplit_once('.')
        .ok_or_else(|| usage(format!("{path:?} is not TARGET.INPUT")))?;
    let node = wf
        .resolve(target)
        .map_err(|e| usage(format!("{path}: {e}")))?;
    Ok((node.clone(), input.to_owned()))
}

/// Loads the graph, applies `--set` and `--upload`, and runs `--count` copies, each with fresh
/// values in every literal `seed` and `noise_seed` input not set by `--set`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let plan = Plan::from_args(&args.jobs)?;
    let mut wf = crate::convert::load(&args.graph, || {
        crate::convert::fetch_object_info(&plan.template).map(Some)
    })?;
    let mut fixed: HashSet<(NodeId, String)> = HashSet::new();
    for (path, value) in &args.sets {
        fixed.insert(resolve(&wf, path)?);
        wf.set(path, value.clone())
            .map_err(|e| usage(format!("--set {path}: {e}")))?;
    }
    let uploads = read_uploads(&wf, &args.uploads)?;
    let seeds: Vec<(NodeId, String)> = wf
        .iter()
        .flat_map(|(id, node)| {
            node.inputs()
                .iter()
                .filter(|(name, input)| {
                    matches!(*name, "seed" | "noise_seed")
                        && input.as_value().is_some_and(Value::is_number)
                })
                .map(|(name, _)| (id.clone(), name.to_owned()))
                .collect::<Vec<_>>()
        })
        .filter(|key| !fixed.contains(key))
        .collect();
    let workflows = (0..args.jobs.count)
        .map(|_| {
            let mut job = wf.clone();
            for (node, input) in &seeds {
                job.set_input(node.as_str(), input, fastrand::u64(..))
                    .map_err(|e| runtime(e.to_string()))?;
            }
            Ok(job)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(jobs::run_with_uploads(&plan, workflows, uploads)?.exit_code())
}

/// Reads the `--upload` files. Each job uploads them to the server that runs it (every attempt
/// to its own server), then points the input at the name that server returned.
fn read_uploads(wf: &Workflow, uploads: &[(String, PathBuf)]) -> Result<Vec<Upload>> {
    let mut files = Vec::new();
    for (path, file) in uploads {
        let (node, input) = resolve(wf, path)?;
        let bytes =
            fs::read(file).map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
        let file_name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| usage(format!("{} has no usable file name", file.display())))?
            .to_owned();
        files.push(Upload {
            input: format!("{node}.{input}"),
            file_name,
            bytes: Arc::new(bytes),
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_json_or_text() {
        assert_eq!(
            parse_set("3.seed=5").unwrap(),
            ("3.seed".into(), Value::from(5))
        );
        assert_eq!(
            parse_set("KSampler.sampler_name=euler").unwrap().1,
            Value::from("euler")
        );
        assert_eq!(
            parse_set("SD1.5 Loader.x=a=b").unwrap().1,
            Value::from("a=b")
        );
        for bad in ["seed=5", "3.seed", ".seed=1", "3.=1"] {
            assert!(parse_set(bad).is_err(), "{bad}");
        }
    }
}
