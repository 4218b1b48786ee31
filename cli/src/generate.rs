//! `comfy-proxy generate flux|qwen-image`: runs N jobs of a built-in graph on the pool.

use std::process::ExitCode;

use clap::Subcommand;

use crate::error::Result;
use crate::jobs::{self, JobArgs, Plan};
use crate::model::{FluxFlags, Model, QwenFlags};

/// A built-in workflow, its flags, and where to run it.
#[derive(Subcommand, Debug, Clone)]
pub enum Generate {
    /// Flux text-to-image.
    Flux {
        #[command(flatten)]
        model: FluxFlags,
        #[command(flatten)]
        jobs: JobArgs,
    },
    /// Qwen Image text-to-image.
    #[command(name = "qwen-image")]
    QwenImage {
        #[command(flatten)]
        model: QwenFlags,
        #[command(flatten)]
        jobs: JobArgs,
    },
}

/// Builds `--count` graphs, each with a fresh random seed (or `--seed` + i for job i), and runs
/// them.
pub fn run(command: Generate) -> Result<ExitCode> {
    let (model, args) = match command {
        Generate::Flux { model, jobs } => (Model::Flux(model), jobs),
        Generate::QwenImage { model, jobs } => (Model::QwenImage(model), jobs),
    };
    let plan = Plan::from_args(&args)?;
    let workflows = (0..u64::from(args.count))
        .map(|i| {
            let seed = match model.seed() {
                Some(seed) => seed.wrapping_add(i),
                None => fastrand::u64(..),
            };
            model.build(seed)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(jobs::run(&plan, workflows)?.exit_code())
}
