//! The hidden `client` mode: M jobs on a pool over the given servers, one JSON line of figures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use comfy_proxy::{ServerAddress, Workflow};
use comfy_proxy_smol::{
    ClientConfig, EventDetail, JobReport, Pool, PoolConfig, PoolEvent, PoolEvents,
};
use futures_util::StreamExt;

use crate::figures::RunFigures;
use crate::serve::PNG_SIGNATURE;
use crate::{Args, usage};

/// The node id the Python original collects images from; both clients post the same graph.
pub const SAVE_NODE: &str = "save_image_websocket_node";

/// One `EmptyImage` into one `SaveImageWebsocket`: no sampler, so the job takes the server's
/// fixed job time.
pub fn graph() -> Workflow {
    Workflow::from_json(&format!(
        r#"{{"1":{{"class_type":"EmptyImage","inputs":{{"width":64,"height":64,"batch_size":1,"color":0}}}},
            "{SAVE_NODE}":{{"class_type":"SaveImageWebsocket","inputs":{{"images":["1",0]}}}}}}"#
    ))
    .expect("the benchmark graph is valid")
}

struct Job {
    servers: Vec<ServerAddress>,
    jobs: usize,
    /// The image size every job must return; `None`: any successful job counts (a real
    /// server's graph).
    image_bytes: Option<usize>,
    write_dir: Option<PathBuf>,
    /// The graph to run (default: [`graph`]).
    graph: Workflow,
    /// Route by capability: check each job against the classes it uses on each server.
    validate: bool,
    /// Jobs in flight per server, if not the scheduler's default.
    per_server: Option<usize>,
    /// The events the pool reports.
    events: EventDetail,
}

/// The pool's event detail named `level` (`all`, `outputs`, `reports`).
pub fn event_detail(level: &str) -> Result<EventDetail, String> {
    match level {
        "all" => Ok(EventDetail::All),
        "outputs" => Ok(EventDetail::Outputs),
        "reports" => Ok(EventDetail::Reports),
        other => Err(format!(
            "--events {other:?}: expected all, outputs or reports"
        )),
    }
}

/// `client --runtime smol|async-std --servers LIST --jobs M (--image-bytes B | --graph FILE)
/// [--write-dir D] [--validate] [--events all|outputs|reports]`.
pub fn main(args: &Args) -> Result<(), String> {
    let servers = args
        .get("servers")?
        .split(',')
        .map(|s| ServerAddress::parse(s).map_err(|e| format!("server {s:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let graph = match args.opt("graph") {
        None => graph(),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("read the graph {path}: {e}"))?;
            Workflow::from_json(&text).map_err(|e| format!("the graph {path}: {e}"))?
        }
    };
    let job = Job {
        servers,
        jobs: args.num("jobs")?,
        image_bytes: match args.opt("graph") {
            None => Some(args.num("image-bytes")?),
            Some(_) => None,
        },
        write_dir: args.opt("write-dir").map(PathBuf::from),
        graph,
        validate: args.opt("validate").is_some(),
        per_server: match args.opt("per-server") {
            Some(_) => Some(args.num("per-server")?),
            None => None,
        },
        events: event_detail(args.opt("events").unwrap_or("all"))?,
    };
    let figures = match args.get("runtime")? {
        "smol" => smol::block_on(drive(comfy_proxy_smol::pool, &job))?,
        // Every task of the pool on the thread that reads its events.
        "smol-1thread" => {
            let executor = std::sync::Arc::new(smol::Executor::new());
            let rt = std::sync::Arc::new(comfy_proxy_smol::Smol::with_executor(executor.clone()));
            let start = move |config| comfy_proxy_smol::pool_with(rt.clone(), config);
            smol::block_on(executor.run(drive(start, &job)))?
        }
        "async-std" => async_std::task::block_on(drive(comfy_proxy_async_std::pool, &job))?,
        "floor" => crate::floor::main(
            &job.servers,
            job.jobs,
            job.image_bytes.ok_or("the floor needs --image-bytes")?,
        )?,
        other => return Err(format!("unknown runtime {other:?}")),
    };
    println!(
        "{}",
        serde_json::to_string(&figures).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// Submits every job, waits for every `Finished`, and measures from before the pool starts
/// (its connections included) to the last report.
async fn drive(
    start_pool: impl Fn(PoolConfig) -> (Pool, PoolEvents),
    job: &Job,
) -> Result<RunFigures, String> {
    let before = usage()?;
    let start = Instant::now();
    let template = ClientConfig::new(job.servers[0].clone());
    let mut config = PoolConfig::new(&job.servers, &template);
    config.route_by_capability = job.validate;
    config.events = job.events;
    if let Some(n) = job.per_server {
        config.scheduler.per_server = n;
    }
    let (pool, mut events) = start_pool(config);
    for _ in 0..job.jobs {
        // Its report comes on `events`: the handle is dropped at once.
        pool.submit(job.graph.clone())
            .await
            .map_err(|err| format!("submit: {err}"))?;
    }
    let mut prompts = Vec::new();
    pool.close();
    let mut per_server = vec![0usize; job.servers.len()];
    let mut finished = 0;
    let mut first: Option<(f64, f64)> = None;
    while finished < job.jobs {
        let Some(event) = events.next().await else {
            return Err(format!(
                "the pool's events ended after {finished} of {} jobs",
                job.jobs
            ));
        };
        let PoolEvent::Finished(report) = event else {
            continue;
        };
        finished += 1;
        if first.is_none() {
            first = Some((start.elapsed().as_secs_f64(), usage()?.cpu_s));
        }
        let server = check(&report, job.image_bytes)?;
        if let (None, Some(prompt)) = (job.image_bytes, &report.prompt_id) {
            prompts.push((server, prompt.as_str().to_owned()));
        }
        *per_server
            .get_mut(server)
            .ok_or_else(|| format!("job {} reports server {server}", report.job))? += 1;
        if let Some(dir) = &job.write_dir {
            write(dir, &report)?;
        }
        // The report, and its image with it, is dropped here.
    }
    let makespan = start.elapsed();
    let after = usage()?;
    drop(pool);
    let cpu_s = after.cpu_s - before.cpu_s;
    if cpu_s <= 0.0 {
        return Err("the CPU time did not advance: it cannot be measured".into());
    }
    Ok(RunFigures {
        jobs: job.jobs,
        makespan_s: makespan.as_secs_f64(),
        per_server,
        cpu_s,
        peak_rss_kib: after.max_rss_kib,
        first_done_s: first.map(|f| f.0),
        steady_cpu_s: first.map(|f| after.cpu_s - f.1),
        prompts,
    })
}

/// The server that ran a successful job with its one PNG of the expected size (any outputs
/// when `image_bytes` is `None`); any other report is an error.
fn check(report: &JobReport, image_bytes: Option<usize>) -> Result<usize, String> {
    if let Err(e) = &report.outcome {
        return Err(format!("job {} failed: {e}", report.job));
    }
    let server = report
        .server
        .ok_or_else(|| format!("job {} succeeded on no server", report.job))?;
    let Some(image_bytes) = image_bytes else {
        return Ok(server);
    };
    match &report.outputs[..] {
        [output]
            if output.node.as_str() == SAVE_NODE
                && output.index == 0
                && output.bytes().len() == image_bytes
                && output.bytes().starts_with(PNG_SIGNATURE) =>
        {
            Ok(server)
        }
        outputs => Err(format!(
            "job {}: expected one PNG of {image_bytes} bytes from {SAVE_NODE}, got {outputs:?}",
            report.job
        )),
    }
}

fn write(dir: &Path, report: &JobReport) -> Result<(), String> {
    let path = dir.join(format!("job-{}.png", report.job.0));
    let data = report.outputs.first().map_or(&[][..], |o| o.bytes());
    std::fs::write(&path, data).map_err(|e| format!("write {}: {e}", path.display()))
}
