//! `comfy-proxy`: build Flux and Qwen Image graphs, run graphs on a pool of ComfyUI servers,
//! replay recorded sessions, run mock servers, and a demo that needs no GPU.
//!
//! Exit codes: 0 when every job succeeded, 1 when any failed (or the machinery broke), 2 for a
//! usage or configuration error, with a message that says what to fix, 130 when interrupted
//! (Ctrl-C).

mod convert;
mod demo;
mod error;
mod generate;
mod interrupt;
mod jobs;
mod logger;
mod mock;
mod model;
mod ops;
mod output;
mod progress;
mod replay;
mod run;
mod tls;
mod validate;
mod workflow;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};

/// A ComfyUI client for many servers: build graphs, run them, replay recordings.
#[derive(Parser, Debug)]
#[command(name = "comfy-proxy", version, about, long_about = None)]
#[command(
    after_help = "Environment: COMFY_SERVERS (default for --server), COMFY_TOKEN \
    (bearer token sent to every server).\nExit codes: 0 every job succeeded, 1 a job failed, \
    2 usage or configuration error, 130 interrupted: Ctrl-C cancels the run's prompts on their \
    servers and prints the summary so far; a second Ctrl-C exits at once."
)]
struct Cli {
    /// Log what the client and the pool do on stderr: -v connects, retries, breakers,
    /// steals, cancels and job ends; -vv every request and post too. URLs show no token.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a built-in graph, or any workflow file converted (API format), on stdout.
    #[command(subcommand)]
    Workflow(convert::WorkflowCommand),
    /// Run --count jobs of a built-in graph on the servers and save their images.
    #[command(subcommand)]
    Generate(generate::Generate),
    /// Run a workflow file (API or UI-format JSON, or a PNG/WebP saved by ComfyUI) on the
    /// servers and save its images.
    Run(run::RunArgs),
    /// Check a graph against a server's object_info: exit 0 when valid, 1 with the errors.
    Validate(validate::ValidateArgs),
    /// Replay a recorded session (comfy-transcript/1) through the client core.
    Replay(replay::ReplayArgs),
    /// Run mock ComfyUI servers (replaying recordings, simulating other graphs) until killed.
    Mock(mock::MockArgs),
    /// Four in-process mock servers, sixteen Flux jobs, images in ./comfy-proxy-demo/.
    Demo,
    /// Server operations: queue, history, interrupt, free, models, stats, upload, view.
    #[command(flatten)]
    Ops(ops::Ops),
}

/// Adds which model a refused model-only flag belongs to.
fn explain(mut e: clap::Error) -> clap::Error {
    if e.kind() != ErrorKind::UnknownArgument {
        return e;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let flag = arg.split('=').next().unwrap_or_default().to_owned();
    if let Some((_, model)) = model::MODEL_ONLY_FLAGS.iter().find(|(f, _)| *f == flag) {
        let tip = format!("{flag} applies to {model} only");
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    e
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let e = explain(e);
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    logger::init(logger::level(cli.verbose));
    let result = match cli.command {
        Command::Workflow(convert::WorkflowCommand::Builtin(m)) => workflow::run(&m),
        Command::Workflow(convert::WorkflowCommand::Convert(c)) => convert::run(&c),
        Command::Generate(g) => generate::run(g),
        Command::Run(r) => run::run(r),
        Command::Validate(v) => validate::run(&v),
        Command::Replay(r) => replay::run(&r),
        Command::Mock(m) => mock::run(&m),
        Command::Demo => demo::run(),
        Command::Ops(o) => ops::run(o),
    };
    match result {
        Ok(code) => code,
        Err(fail) => {
            // Messages may quote a server or a file: no escape sequence reaches the terminal.
            eprintln!(
                "error: {}",
                comfy_proxy::text::terminal_safe(&fail.to_string())
            );
            fail.exit_code()
        }
    }
}
