//! The Python original, `comfy-proxy==0.2.1` from PyPI, in a virtualenv kept under `target/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::child;
use crate::client::SAVE_NODE;
use crate::figures::{Outcome, RunFigures, Trace};

/// The release compared against.
pub const PACKAGE: &str = "comfy-proxy==0.2.1";
const VERSION: &str = "0.2.1";

/// A virtualenv with the original installed, and the driver script.
pub struct Python {
    python: PathBuf,
    script: PathBuf,
    /// `Python 3.x.y; comfy-proxy 0.2.1, aiohttp ..., websockets ...`.
    pub versions: String,
}

/// Creates (or reuses) the virtualenv at `dir`; `Err` says why the original cannot be had.
pub fn setup(dir: &Path) -> Result<Python, String> {
    let python = dir.join("bin").join("python");
    if installed(&python).is_none() {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
        }
        eprintln!("e2e: creating a virtualenv at {}", dir.display());
        let venv = Command::new("python3")
            .args(["-m", "venv"])
            .arg(dir)
            .output()
            .map_err(|e| format!("python3 -m venv: {e}"))?;
        if !venv.status.success() {
            return Err(format!(
                "python3 -m venv failed: {}",
                String::from_utf8_lossy(&venv.stderr).trim()
            ));
        }
        let log = dir.join("pip-install.log");
        eprintln!(
            "e2e: pip install {PACKAGE} (log: {}); this may take a minute",
            log.display()
        );
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err_file = log_file.try_clone().map_err(|e| e.to_string())?;
        let pip = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                PACKAGE,
            ])
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(err_file))
            .status()
            .map_err(|e| format!("pip: {e}"))?;
        if !pip.success() {
            return Err(format!(
                "pip install {PACKAGE} failed ({pip}); see {}",
                log.display()
            ));
        }
    }
    let versions = installed(&python)
        .ok_or_else(|| format!("{PACKAGE} does not import after installing it"))?;
    let script = dir.join("e2e_driver.py");
    std::fs::write(&script, SCRIPT.replace("@SAVE_NODE@", SAVE_NODE))
        .map_err(|e| format!("write {}: {e}", script.display()))?;
    Ok(Python {
        python,
        script,
        versions,
    })
}

/// The versions, if the virtualenv has the right release and it imports.
fn installed(python: &Path) -> Option<String> {
    if !python.exists() {
        return None;
    }
    let out = Command::new(python)
        .args(["-c", VERSIONS])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && text.contains(&format!("comfy-proxy {VERSION},"))).then_some(text)
}

impl Python {
    /// Runs the original's `Comfy` on `servers` for `jobs` jobs; a run past `deadline` is a hang.
    pub fn run(
        &self,
        servers: &str,
        jobs: usize,
        image_bytes: usize,
        write_dir: Option<&Path>,
        deadline: Duration,
    ) -> Result<Outcome, String> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .args([servers, &jobs.to_string(), &image_bytes.to_string()])
            .arg(write_dir.map_or_else(|| "-".into(), |d| d.as_os_str().to_owned()));
        let end = child::run(cmd, deadline)?;
        let trace = Trace::parse(&end.stderr);
        match end.status {
            None => Ok(Outcome::Hang {
                trace,
                deadline_s: deadline.as_secs_f64(),
            }),
            Some(status) if status.success() => {
                let line = end
                    .last_line()
                    .ok_or("the Python driver printed no figures")?;
                let figures: RunFigures = serde_json::from_str(line)
                    .map_err(|e| format!("the Python driver printed {line:?}: {e}"))?;
                Ok(Outcome::Ran(figures))
            }
            Some(status) => Ok(Outcome::Error(format!(
                "{status} after {} of {jobs} jobs:\n{}",
                trace.done,
                end.stderr_tail()
            ))),
        }
    }
}

const VERSIONS: &str = r#"
import sys, importlib.metadata as m
import comfy_proxy.comfy, comfy_proxy.workflow
v = lambda p: m.version(p)
print(f"Python {sys.version.split()[0]}; comfy-proxy {v('comfy-proxy')}, aiohttp {v('aiohttp')}, websockets {v('websockets')}")
"#;

/// The driver: the original's `Comfy` over the servers, the harness's graph, the same figures.
/// `@SAVE_NODE@` stands for [`SAVE_NODE`].
const SCRIPT: &str = r#""""Drives comfy-proxy 0.2.1 (the Python original) for the e2e harness: one JSON line."""
import asyncio, json, os, resource, sys, time

from comfy_proxy.comfy import Comfy
from comfy_proxy.workflow import ComfyWorkflow

SAVE_NODE = "@SAVE_NODE@"
PNG = b"\x89PNG\r\n\x1a\n"


def workflow():
    wf = ComfyWorkflow()
    image = wf.add_node("EmptyImage", {"width": 64, "height": 64, "batch_size": 1, "color": 0}, node_id="1")
    wf.add_node("SaveImageWebsocket", {"images": [image, 0]}, node_id=SAVE_NODE)
    return wf


async def watch(images, addr, n):
    # Passes the original's images through, and tells the harness where each job got to: a
    # job that yields no image leaves its future unresolved, and its caller waits for ever.
    print(f"start {addr} {n}", file=sys.stderr, flush=True)
    got = False
    async for image in images:
        if not got:
            print(f"image {addr} {n}", file=sys.stderr, flush=True)
        got = True
        yield image
    if not got:
        print(f"empty {addr} {n}", file=sys.stderr, flush=True)


async def run(servers, jobs, image_bytes, write_dir):
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    comfy = Comfy(servers)
    # Counts the jobs each instance runs; the call itself is the original's.
    per_server = {addr: 0 for addr in comfy.addresses}
    for instance in comfy.instances:
        def counted(wf, image_uploads=None, _generate=instance.generate, _addr=instance.addr):
            per_server[_addr] += 1
            return watch(_generate(wf, image_uploads), _addr, per_server[_addr])
        instance.generate = counted
    done = 0
    first = None

    async def one(i):
        nonlocal done, first
        image = None
        async for data in comfy.generate(workflow()):
            image = data
            break
        if image is None or len(image) != image_bytes or not image.startswith(PNG):
            raise RuntimeError(f"job {i}: expected a PNG of {image_bytes} bytes, got {None if image is None else len(image)}")
        if write_dir:
            with open(os.path.join(write_dir, f"job-{i}.png"), "wb") as f:
                f.write(image)
        del image
        done += 1
        if first is None:
            first = (time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF))
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(f"done {done} {time.perf_counter() - start:.6f} {ru.ru_utime + ru.ru_stime:.6f}", file=sys.stderr, flush=True)

    await asyncio.gather(*(one(i) for i in range(jobs)))
    makespan = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    await comfy.stop()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(json.dumps({
        "jobs": jobs,
        "makespan_s": makespan,
        "per_server": [per_server[a] for a in comfy.addresses],
        "cpu_s": cpu,
        "peak_rss_kib": after.ru_maxrss,
        "first_done_s": first[0],
        "steady_cpu_s": (after.ru_utime + after.ru_stime) - (first[1].ru_utime + first[1].ru_stime),
    }), flush=True)


def main():
    servers, jobs, image_bytes, write_dir = sys.argv[1:5]
    asyncio.run(run(servers.split(","), int(jobs), int(image_bytes), None if write_dir == "-" else write_dir))


if __name__ == "__main__":
    main()
"#;
