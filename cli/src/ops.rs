//! Server operations: `queue`, `history`, `interrupt`, `free`, `models`, `stats`, `upload`,
//! `view` and `object-info`, each one or two HTTP exchanges with the first server of
//! `--server`, printed as sentences or, with `--json`, as one JSON document.
//!
//! Exit codes: 0 done, 1 the server failed or could not be reached, 2 a usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_proxy::address::parse_addresses;
use comfy_proxy::wire::FileRef;
use comfy_proxy::wire::http::{HistoryEntry, QueueItem, QueuePosition, QueueState, SystemStats};
use comfy_proxy::{PromptId, ProtocolError};
use comfy_proxy_driver::{Client, ClientError, UploadOptions};
use serde_json::{Value, json};

use crate::error::{Result, runtime, usage};

/// Prints a line that may quote the server (names, messages, file names) without its escape
/// sequences or control characters.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", comfy_proxy::text::terminal_safe(&format!($($arg)*)))
    };
}

/// Prints a JSON document with the characters a terminal would act on written as `\u` escapes:
/// the same document, printed safely.
macro_rules! say_json {
    ($value:expr) => {
        println!(
            "{}",
            comfy_proxy::text::terminal_safe_json(&$value.to_string())
        )
    };
}

/// The flags every operation takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The server: the first of a comma list of HOST[:PORT] or URLs. Defaults to
    /// $COMFY_SERVERS. $COMFY_TOKEN, when set, is sent as a bearer token.
    #[arg(long, value_name = "ADDRS", env = "COMFY_SERVERS")]
    pub server: Option<String>,
    /// Print the answer as one JSON document instead of sentences.
    #[arg(long)]
    pub json: bool,
    /// Give up on an exchange with no answer after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
    /// TLS: a private root CA, or no verification at all.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

/// The server operations, as subcommands of `comfy-proxy`.
#[derive(Subcommand, Debug)]
pub enum Ops {
    /// Show the server's queue (every client's prompts), a prompt's place in it, or edit it.
    Queue(QueueArgs),
    /// Show finished prompts (the last --max-items, or one by ID), or forget them.
    History(HistoryArgs),
    /// Stop the running prompt: any (no PROMPT), or PROMPT only if it is the one running.
    Interrupt(InterruptArgs),
    /// Ask the server to unload its models and free cached memory (both unless one is given).
    Free(FreeArgs),
    /// List the model folders, or the files in FOLDER (`models loras`).
    Models(ModelsArgs),
    /// Show the server's versions, RAM and devices.
    Stats(StatsArgs),
    /// Upload an image (or, with --mask, a mask for an image the server holds).
    Upload(UploadArgs),
    /// Download a file the server holds (an output, an upload) with GET /view.
    View(ViewArgs),
    /// Print the server's object_info: every node class, or CLASS.
    ObjectInfo(ObjectInfoArgs),
}

/// Arguments of `queue`.
#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(flatten)]
    common: Common,
    /// Show where this prompt is: running, pending (with how many run before it) or not queued.
    #[arg(long, value_name = "PROMPT", conflicts_with_all = ["delete", "clear"])]
    position: Option<String>,
    /// Remove these pending prompts (a running one needs `interrupt`), then show the queue.
    #[arg(long, value_name = "PROMPT", num_args = 1.., conflicts_with = "clear")]
    delete: Vec<String>,
    /// Remove every pending prompt of every client, then show the queue.
    #[arg(long)]
    clear: bool,
}

/// Arguments of `history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    common: Common,
    /// One prompt's entry; without it, the last --max-items prompts.
    #[arg(value_name = "PROMPT")]
    prompt: Option<String>,
    /// How many recent prompts to show.
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_items: u32,
    /// Forget PROMPT (its files stay on the server).
    #[arg(long, requires = "prompt", conflicts_with = "clear")]
    delete: bool,
    /// Forget every finished prompt of every client.
    #[arg(long, conflicts_with = "prompt")]
    clear: bool,
}

/// Arguments of `interrupt`.
#[derive(Args, Debug)]
pub struct InterruptArgs {
    #[command(flatten)]
    common: Common,
    /// Stop only this prompt, and only if it is the one running.
    #[arg(value_name = "PROMPT")]
    prompt: Option<String>,
}

/// Arguments of `free`.
#[derive(Args, Debug)]
pub struct FreeArgs {
    #[command(flatten)]
    common: Common,
    /// Unload the models.
    #[arg(long)]
    unload_models: bool,
    /// Free cached memory.
    #[arg(long)]
    free_memory: bool,
}

/// Arguments of `models`.
#[derive(Args, Debug)]
pub struct ModelsArgs {
    #[command(flatten)]
    common: Common,
    /// A model folder (`loras`, `checkpoints`, ...); without it, the folder names.
    #[arg(value_name = "FOLDER")]
    folder: Option<String>,
}

/// Arguments of `stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    common: Common,
}

/// Arguments of `upload`.
#[derive(Args, Debug)]
pub struct UploadArgs {
    #[command(flatten)]
    common: Common,
    /// The file to upload; it keeps its name unless the server renames it.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Upload FILE as a mask for --original: the server puts FILE's alpha channel on that image.
    #[arg(long, requires = "original")]
    mask: bool,
    /// The image a --mask applies to, as [SUBFOLDER/]NAME in --original-type's folder.
    #[arg(long, value_name = "REF", requires = "mask")]
    original: Option<String>,
    /// The folder the --original image is in.
    #[arg(long, value_name = "TYPE", default_value = "input",
          value_parser = ["input", "temp", "output"])]
    original_type: String,
    /// Store in this subfolder.
    #[arg(long, value_name = "S")]
    subfolder: Option<String>,
    /// Replace a file of the same name instead of letting the server rename the upload.
    #[arg(long)]
    overwrite: bool,
    /// The folder to store in.
    #[arg(long = "type", value_name = "TYPE", default_value = "input",
          value_parser = ["input", "temp", "output"])]
    kind: String,
}

/// Arguments of `view`.
#[derive(Args, Debug)]
pub struct ViewArgs {
    #[command(flatten)]
    common: Common,
    /// The file's name on the server.
    #[arg(value_name = "NAME")]
    name: String,
    /// Its subfolder.
    #[arg(long, value_name = "S", default_value = "")]
    subfolder: String,
    /// Its folder.
    #[arg(long = "type", value_name = "TYPE", default_value = "output")]
    kind: String,
    /// Where to write it (default: NAME's last component in the current directory).
    #[arg(long, short, value_name = "PATH")]
    out: Option<PathBuf>,
}

/// Arguments of `object-info`.
#[derive(Args, Debug)]
pub struct ObjectInfoArgs {
    #[command(flatten)]
    common: Common,
    /// One node class; without it, every class.
    #[arg(value_name = "CLASS")]
    class: Option<String>,
}

/// Runs one operation.
pub fn run(op: Ops) -> Result<ExitCode> {
    match op {
        Ops::Queue(a) => queue(&a),
        Ops::History(a) => history(&a),
        Ops::Interrupt(a) => interrupt(&a),
        Ops::Free(a) => free(&a),
        Ops::Models(a) => models(&a),
        Ops::Stats(a) => stats(&a),
        Ops::Upload(a) => upload(&a),
        Ops::View(a) => view(&a),
        Ops::ObjectInfo(a) => object_info(&a),
    }
}

/// A client for the first server of `--server`, with `$COMFY_TOKEN` and `--timeout`.
fn client(common: &Common) -> Result<Client> {
    let spec = common.server.as_deref().unwrap_or("");
    if spec.trim().is_empty() {
        return Err(usage(
            "no server given: pass --server HOST:PORT or set COMFY_SERVERS",
        ));
    }
    let servers = parse_addresses(spec).map_err(|e| usage(format!("bad --server: {e}")))?;
    if !common.timeout.is_finite() || common.timeout <= 0.0 || common.timeout > 1e9 {
        return Err(usage("--timeout: give a positive number of seconds"));
    }
    let mut config = crate::tls::client_config(servers[0].clone(), &common.tls)?;
    config.http_timeout = Duration::from_secs_f64(common.timeout);
    config.connect_timeout = config.connect_timeout.min(config.http_timeout);
    let (rt, http) = crate::jobs::kit();
    Ok(Client::connect(rt, http, config))
}

/// Runs `op` on a client for `common`'s server; a failure of the server is exit code 1.
fn with_client<T>(
    common: &Common,
    op: impl AsyncFnOnce(&Client) -> std::result::Result<T, ClientError>,
) -> Result<T> {
    let client = client(common)?;
    let server = client.server().to_string();
    smol::block_on(op(&client)).map_err(|e| runtime(format!("{server}: {e}")))
}

fn prompt_id(text: &str) -> Result<PromptId> {
    if text.trim().is_empty() {
        return Err(usage("a prompt id may not be empty"));
    }
    Ok(PromptId::new(text))
}

/// A queue number as JSON: an integer when it is one (`22`, not `22.0`).
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

fn item_json(item: &QueueItem) -> Value {
    json!({
        "number": number(item.number),
        "prompt_id": item.prompt_id.as_str(),
        "client_id": item.client_id.as_ref().map(|c| c.as_str()),
    })
}

fn queue_json(q: &QueueState) -> Value {
    json!({
        "running": q.running.iter().map(item_json).collect::<Vec<_>>(),
        "pending": q.pending.iter().map(item_json).collect::<Vec<_>>(),
    })
}

fn print_queue(q: &QueueState) {
    say!("{} running, {} pending", q.running.len(), q.pending.len());
    let rows =
        (q.running.iter().map(|i| ("running", i))).chain(q.pending.iter().map(|i| ("pending", i)));
    for (state, item) in rows {
        let client = item.client_id.as_ref().map_or("-", |c| c.as_str());
        say!(
            "  {state}  #{}  {}  client {client}",
            number(item.number),
            item.prompt_id
        );
    }
}

fn queue(a: &QueueArgs) -> Result<ExitCode> {
    let position = a.position.as_deref().map(prompt_id).transpose()?;
    let delete = a
        .delete
        .iter()
        .map(|d| prompt_id(d))
        .collect::<Result<Vec<_>>>()?;
    let q = with_client(&a.common, async |c| {
        if a.clear {
            c.clear_queue().await?;
        }
        if !delete.is_empty() {
            c.delete_from_queue(&delete).await?;
        }
        c.queue().await
    })?;
    if let Some(id) = position {
        let (state, ahead) = match q.contains(&id) {
            Some(QueuePosition::Running) => ("running", None),
            Some(QueuePosition::Pending { ahead }) => ("pending", Some(ahead)),
            _ => ("not queued", None),
        };
        if a.common.json {
            let state = (state != "not queued").then_some(state);
            say_json!(json!({"prompt_id": id.as_str(), "position": state, "ahead": ahead}));
        } else {
            match ahead {
                Some(n) => say!("{id}: pending, {n} ahead"),
                None => say!("{id}: {state}"),
            }
        }
    } else if a.common.json {
        say_json!(queue_json(&q));
    } else {
        print_queue(&q);
    }
    Ok(ExitCode::SUCCESS)
}

fn status_word(e: &HistoryEntry) -> &'static str {
    if e.succeeded() {
        "success"
    } else if e.interrupted() {
        "interrupted"
    } else if e.execution_error().is_some() {
        "error"
    } else {
        "unknown"
    }
}

fn entry_json(e: &HistoryEntry) -> Value {
    let error = e.execution_error().map(|x| {
        json!({
            "node_id": x.node_id.as_str(),
            "node_type": x.node_type,
            "exception_type": x.exception_type,
            "exception_message": x.exception_message,
        })
    });
    let outputs: serde_json::Map<String, Value> = (e.outputs.iter())
        .map(|(node, out)| (node.as_str().to_owned(), Value::Object(out.clone())))
        .collect();
    let files: Vec<Value> = (e.files().into_iter())
        .map(|(node, f)| {
            json!({"node": node.as_str(), "filename": f.filename, "subfolder": f.subfolder,
                   "type": f.kind})
        })
        .collect();
    json!({
        "prompt_id": e.prompt_id.as_str(),
        "number": number(e.number),
        "status": status_word(e),
        "error": error,
        "outputs": outputs,
        "files": files,
    })
}

fn print_entry(e: &HistoryEntry) {
    let files = e.files();
    say!(
        "{}  #{}  {}  {} output node(s), {} file(s)",
        e.prompt_id,
        number(e.number),
        status_word(e),
        e.outputs.len(),
        files.len()
    );
    if let Some(x) = e.execution_error() {
        say!(
            "    error in node {} ({}): {}: {}",
            x.node_id,
            x.node_type,
            x.exception_type,
            x.exception_message
        );
    }
    for (node, f) in files {
        let sub = if f.subfolder.is_empty() {
            String::new()
        } else {
            format!("{}/", f.subfolder)
        };
        say!("    node {node}: {}/{sub}{}", f.kind, f.filename);
    }
}

fn history(a: &HistoryArgs) -> Result<ExitCode> {
    let id = a.prompt.as_deref().map(prompt_id).transpose()?;
    let json = a.common.json;
    match (id, a.delete, a.clear) {
        (Some(id), true, _) => {
            with_client(&a.common, async |c| {
                c.delete_history(std::slice::from_ref(&id)).await
            })?;
            done(
                json,
                json!({"deleted": [id.as_str()]}),
                &format!("forgot {id}"),
            );
        }
        (None, _, true) => {
            with_client(&a.common, async |c| c.clear_history().await)?;
            done(json, json!({"cleared": true}), "history cleared");
        }
        (Some(id), false, _) => {
            let entry = with_client(&a.common, async |c| c.history(&id).await)?;
            match (&entry, json) {
                (Some(e), true) => say_json!(entry_json(e)),
                (Some(e), false) => print_entry(e),
                (None, true) => say!("null"),
                (None, false) => say!("{id}: no history (not finished, or unknown)"),
            }
        }
        (None, _, false) => {
            let entries = with_client(&a.common, async |c| c.recent_history(a.max_items).await)?;
            if json {
                let all: Vec<Value> = entries.iter().map(entry_json).collect();
                say_json!(Value::Array(all));
            } else if entries.is_empty() {
                say!("no history");
            } else {
                entries.iter().for_each(print_entry);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `value` with `--json`, else `sentence`.
fn done(json: bool, value: Value, sentence: &str) {
    if json {
        say_json!(value);
    } else {
        say!("{sentence}");
    }
}

fn interrupt(a: &InterruptArgs) -> Result<ExitCode> {
    let id = a.prompt.as_deref().map(prompt_id).transpose()?;
    with_client(&a.common, async |c| c.interrupt(id.as_ref()).await)?;
    let sentence = match &id {
        Some(id) => format!("interrupt sent for {id} (it stops if it is the one running)"),
        None => "interrupt sent: the running prompt stops".to_owned(),
    };
    let value = json!({"interrupt": true, "prompt_id": id.as_ref().map(|i| i.as_str())});
    done(a.common.json, value, &sentence);
    Ok(ExitCode::SUCCESS)
}

fn free(a: &FreeArgs) -> Result<ExitCode> {
    let both = !a.unload_models && !a.free_memory;
    let (unload, memory) = (a.unload_models || both, a.free_memory || both);
    with_client(&a.common, async |c| c.free(unload, memory).await)?;
    let value = json!({"unload_models": unload, "free_memory": memory});
    let sentence = format!(
        "asked the server to {} (done between prompts)",
        match (unload, memory) {
            (true, true) => "unload its models and free memory",
            (true, false) => "unload its models",
            _ => "free memory",
        }
    );
    done(a.common.json, value, &sentence);
    Ok(ExitCode::SUCCESS)
}

fn models(a: &ModelsArgs) -> Result<ExitCode> {
    let client = client(&a.common)?;
    let names = match smol::block_on(client.models(a.folder.as_deref())) {
        Ok(names) => names,
        Err(ClientError::Protocol(ProtocolError::UnexpectedStatus { status: 404, .. })) => {
            let folder = a.folder.as_deref().unwrap_or_default();
            return Err(runtime(format!(
                "{}: no model folder {folder:?} (`comfy-proxy models` lists them)",
                client.server()
            )));
        }
        Err(e) => return Err(runtime(format!("{}: {e}", client.server()))),
    };
    if a.common.json {
        say_json!(json!(names));
    } else if names.is_empty() {
        match &a.folder {
            Some(f) => say!("no files in {f}"),
            None => say!("no model folders"),
        }
    } else {
        names.iter().for_each(|n| say!("{n}"));
    }
    Ok(ExitCode::SUCCESS)
}

fn stats_json(s: &SystemStats) -> Value {
    let devices: Vec<Value> = (s.devices.iter())
        .map(|d| {
            json!({"name": d.name, "type": d.kind, "vram_total": d.vram_total,
                   "vram_free": d.vram_free})
        })
        .collect();
    json!({
        "comfyui_version": s.comfyui_version,
        "python_version": s.python_version,
        "pytorch_version": s.pytorch_version,
        "ram_total": s.ram_total,
        "ram_free": s.ram_free,
        "devices": devices,
    })
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

fn stats(a: &StatsArgs) -> Result<ExitCode> {
    let s = with_client(&a.common, async |c| c.system_stats().await)?;
    if a.common.json {
        say_json!(stats_json(&s));
        return Ok(ExitCode::SUCCESS);
    }
    let unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".to_owned());
    say!("ComfyUI {}", unknown(&s.comfyui_version));
    say!("Python  {}", unknown(&s.python_version));
    say!("PyTorch {}", unknown(&s.pytorch_version));
    say!("RAM     {} free of {}", gib(s.ram_free), gib(s.ram_total));
    for d in &s.devices {
        say!(
            "device  {} ({}): {} free of {}",
            d.name,
            d.kind,
            gib(d.vram_free),
            gib(d.vram_total)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `[SUBFOLDER/]NAME` in `kind` as a file reference.
fn file_ref(text: &str, kind: &str) -> FileRef {
    let (subfolder, name) = text.rsplit_once('/').unwrap_or(("", text));
    FileRef {
        filename: name.to_owned(),
        subfolder: subfolder.to_owned(),
        kind: kind.to_owned(),
    }
}

fn upload(a: &UploadArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&a.file)
        .map_err(|e| usage(format!("cannot read {}: {e}", a.file.display())))?;
    let name = (a.file.file_name())
        .and_then(|n| n.to_str())
        .ok_or_else(|| usage(format!("{} has no usable file name", a.file.display())))?
        .to_owned();
    let mut opts = UploadOptions::new().overwrite(a.overwrite).kind(&a.kind);
    if let Some(s) = &a.subfolder {
        opts = opts.subfolder(s);
    }
    if let (true, Some(original)) = (a.mask, &a.original) {
        opts = opts.mask_of(file_ref(original, &a.original_type));
    }
    let client = client(&a.common)?;
    let stored = match smol::block_on(client.upload(&name, &bytes, &opts)) {
        Ok(stored) => stored,
        // A name the multipart encoding refuses is the user's to fix.
        Err(e @ ClientError::Upload(_)) => return Err(usage(e.to_string())),
        Err(e) => return Err(runtime(format!("{}: {e}", client.server()))),
    };
    let value = json!({
        "name": stored.name,
        "subfolder": stored.subfolder,
        "type": stored.kind,
        "input_value": stored.input_value(),
        "bytes": bytes.len(),
    });
    let sentence = format!(
        "uploaded {} ({} bytes) as {}/{}",
        a.file.display(),
        bytes.len(),
        stored.kind,
        stored.input_value()
    );
    done(a.common.json, value, &sentence);
    Ok(ExitCode::SUCCESS)
}

fn view(a: &ViewArgs) -> Result<ExitCode> {
    let file = FileRef {
        filename: a.name.clone(),
        subfolder: a.subfolder.clone(),
        kind: a.kind.clone(),
    };
    let out = match &a.out {
        Some(p) => p.clone(),
        None => {
            let last = a.name.rsplit(['/', '\\']).next().unwrap_or_default();
            if last.is_empty() || last == "." || last == ".." {
                return Err(usage("give --out PATH for this name"));
            }
            PathBuf::from(last)
        }
    };
    let bytes = with_client(&a.common, async |c| c.view(&file).await)?;
    std::fs::write(&out, &bytes)
        .map_err(|e| runtime(format!("cannot write {}: {e}", out.display())))?;
    let value = json!({"path": out.display().to_string(), "bytes": bytes.len()});
    let sentence = format!("wrote {} ({} bytes)", out.display(), bytes.len());
    done(a.common.json, value, &sentence);
    Ok(ExitCode::SUCCESS)
}

fn object_info(a: &ObjectInfoArgs) -> Result<ExitCode> {
    let info = with_client(&a.common, async |c| c.object_info(a.class.as_deref()).await)?;
    if let Some(class) = &a.class
        && info.as_object().is_some_and(|o| o.is_empty())
    {
        return Err(runtime(format!("the server has no node class {class:?}")));
    }
    if a.common.json {
        say_json!(info);
    } else if a.class.is_some() {
        say_json!(serde_json::to_string_pretty(&info).unwrap_or_default());
    } else {
        let mut names: Vec<&String> = info
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        names.sort();
        names.iter().for_each(|n| say!("{n}"));
    }
    Ok(ExitCode::SUCCESS)
}
