//! What the mock reads off a graph: which nodes are outputs, in which order the nodes run, how
//! many steps a sampler takes, how large and how many images are, which seed they use, and the
//! graph's shape (to match it with a recording).
//!
//! Nothing here recurses: a hostile graph (deep chains, cycles, dangling links) is walked with
//! explicit stacks and visited sets.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use serde_json::Value;

use comfy_proxy::ids::NodeId;
use comfy_proxy::workflow::{Node, Workflow};

/// Classes whose progress is simulated step by step, with previews.
pub(super) const SAMPLERS: &[&str] = &[
    "KSampler",
    "KSamplerAdvanced",
    "SamplerCustomAdvanced",
    "SamplerCustom",
    // The recordings' test node: `steps` steps, a preview each.
    "TestSlowProgress",
];

/// Classes that give an image size (`width`, `height`, `batch_size`).
const SIZE_SOURCES: &[&str] = &["EmptySD3LatentImage", "EmptyLatentImage", "EmptyImage"];

/// Output classes when the mock has no `object_info`: those of the recorded server.
const BUILTIN_OUTPUTS: &[&str] = &[
    "CLIPSave",
    "CheckpointSave",
    "ImageOnlyCheckpointSave",
    "LoraSave",
    "MaskPreview",
    "ModelSave",
    "PreviewAny",
    "PreviewAudio",
    "PreviewImage",
    "SaveAnimatedPNG",
    "SaveAnimatedWEBP",
    "SaveAudio",
    "SaveAudioMP3",
    "SaveAudioOpus",
    "SaveGLB",
    "SaveImage",
    "SaveImageWebsocket",
    "SaveLatent",
    "SaveSVGNode",
    "SaveVideo",
    "SaveWEBM",
    "VAESave",
];

/// The most steps a simulated sampler takes; a graph asking for more gets this many.
pub(super) const MAX_STEPS: u32 = 10_000;
/// The largest width or height handed to the renderer.
pub(super) const MAX_SIDE: u32 = 16_384;
/// The largest batch simulated (the real server's limit).
pub(super) const MAX_BATCH: u32 = 4_096;

/// Whether `class` is an output node: by `object_info` when the mock has it, else by the
/// recorded server's list.
pub(super) fn is_output(class: &str, object_info: Option<&Value>) -> bool {
    match object_info {
        Some(info) => {
            info.get(class)
                .and_then(|c| c.get("output_node"))
                .and_then(Value::as_bool)
                == Some(true)
        }
        None => BUILTIN_OUTPUTS.contains(&class),
    }
}

/// A literal non-negative integer input (`64`, or `64.0` as clients may send it).
pub(super) fn int_input(node: &Node, name: &str) -> Option<u64> {
    let value = node.input(name)?.as_value()?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.min(u64::MAX as f64) as u64)
    })
}

/// `start` and then every node it depends on, nearest first (breadth first), each once.
fn ancestors<'a>(wf: &'a Workflow, start: &'a str) -> Vec<(&'a str, &'a Node)> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut queue: VecDeque<&str> = VecDeque::from([start]);
    let mut out = Vec::new();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = wf.node(id) else { continue };
        out.push((id, node));
        for (_, link) in node.inputs().links() {
            queue.push_back(link.node.as_str());
        }
    }
    out
}

/// Width, height and batch size of the images `node` makes: from the nearest
/// `EmptySD3LatentImage`, `EmptyLatentImage` or `EmptyImage` it depends on; 64x64x1 without one.
pub(super) fn image_size(wf: &Workflow, node: &str) -> (u32, u32, u32) {
    let clamp = |v: Option<u64>, default: u32, max: u32| {
        v.map_or(default, |v| v.clamp(1, u64::from(max)) as u32)
    };
    ancestors(wf, node)
        .into_iter()
        .find(|(_, n)| SIZE_SOURCES.contains(&n.class_type()))
        .map_or((64, 64, 1), |(_, n)| {
            (
                clamp(int_input(n, "width"), 64, MAX_SIDE),
                clamp(int_input(n, "height"), 64, MAX_SIDE),
                clamp(int_input(n, "batch_size"), 1, MAX_BATCH),
            )
        })
}

/// The seed of the images `node` makes: the nearest `seed` or `noise_seed` it depends on, else
/// the first in the graph, else 0.
pub(super) fn seed(wf: &Workflow, node: &str) -> u64 {
    let of = |n: &Node| int_input(n, "seed").or_else(|| int_input(n, "noise_seed"));
    ancestors(wf, node)
        .into_iter()
        .find_map(|(_, n)| of(n))
        .or_else(|| wf.iter().find_map(|(_, n)| of(n)))
        .unwrap_or(0)
}

/// The steps of a sampler: its `steps` input, or that of the node linked as its `sigmas`
/// (`BasicScheduler`); 20 without either.
pub(super) fn steps(wf: &Workflow, node: &str) -> u32 {
    let Some(n) = wf.node(node) else { return 20 };
    let from_sigmas = || {
        let link = n.input("sigmas")?.as_link()?;
        int_input(wf.node(link.node.as_str())?, "steps")
    };
    int_input(n, "steps")
        .or_else(from_sigmas)
        .map_or(20, |s| s.min(u64::from(MAX_STEPS)) as u32)
}

/// Why an output cannot run.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Fault {
    /// `node` links to `missing`, which is not in the graph.
    MissingLink { node: NodeId, missing: NodeId },
    /// The output depends on a cycle.
    Cycle { node: NodeId },
}

/// The outputs that can run, the order to run their nodes in, and the faults of the others.
#[derive(Debug, Clone, Default)]
pub(super) struct Plan {
    /// Every node the runnable outputs need, in the order the real server runs them.
    pub order: Vec<NodeId>,
    /// The runnable outputs, in graph order.
    pub outputs: Vec<NodeId>,
    /// Each failed output with its fault.
    pub failed: Vec<(NodeId, Fault)>,
}

/// Every node `start` needs, itself included, and the first dangling link among them.
fn closure(wf: &Workflow, start: &str) -> (BTreeSet<String>, Option<Fault>) {
    let mut seen = BTreeSet::new();
    let mut fault = None;
    let mut stack = vec![start.to_owned()];
    while let Some(id) = stack.pop() {
        if seen.contains(&id) {
            continue;
        }
        let Some(node) = wf.node(&id) else { continue };
        for (_, link) in node.inputs().links() {
            if !wf.contains(link.node.as_str()) {
                fault.get_or_insert_with(|| Fault::MissingLink {
                    node: NodeId::from(id.as_str()),
                    missing: link.node.clone(),
                });
            } else if !seen.contains(link.node.as_str()) {
                stack.push(link.node.as_str().to_owned());
            }
        }
        seen.insert(id);
    }
    (seen, fault)
}

/// Plans the run of `outputs` (graph order) in `wf`.
pub(super) fn plan(wf: &Workflow, outputs: &[NodeId]) -> Plan {
    let position: BTreeMap<&str, usize> = wf
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();
    let mut result = Plan::default();
    let mut needed: BTreeSet<String> = BTreeSet::new();
    let mut closures = Vec::new();
    for out in outputs {
        let (nodes, fault) = closure(wf, out.as_str());
        match fault {
            Some(f) => result.failed.push((out.clone(), f)),
            None => {
                needed.extend(nodes.iter().cloned());
                closures.push((out.clone(), nodes));
            }
        }
    }
    let acyclic = acyclic(wf, &needed);
    for (out, nodes) in closures {
        if nodes.iter().all(|n| acyclic.contains(n.as_str())) {
            result.outputs.push(out);
        } else {
            result
                .failed
                .push((out.clone(), Fault::Cycle { node: out }));
        }
    }
    result
        .outputs
        .sort_by_key(|n| position.get(n.as_str()).copied());
    result
        .failed
        .sort_by_key(|(n, _)| position.get(n.as_str()).copied());
    result.order = run_order(wf, &result.outputs);
    result
}

/// The nodes of `needed` that are neither on a cycle nor behind one (Kahn's algorithm).
fn acyclic<'a>(wf: &Workflow, needed: &'a BTreeSet<String>) -> HashSet<&'a str> {
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for id in needed {
        let Some(node) = wf.node(id) else { continue };
        let deps: BTreeSet<&str> = node
            .inputs()
            .links()
            .filter_map(|(_, l)| needed.get(l.node.as_str()).map(String::as_str))
            .collect();
        waiting.insert(id.as_str(), deps.len());
        for d in deps {
            users.entry(d).or_default().push(id.as_str());
        }
    }
    let mut ready: Vec<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| *id)
        .collect();
    let mut done = HashSet::new();
    while let Some(id) = ready.pop() {
        done.insert(id);
        for user in users.get(id).into_iter().flatten() {
            if let Some(n) = waiting.get_mut(user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    ready.push(user);
                }
            }
        }
    }
    done
}

/// The order the real server runs the nodes of `outputs` in (`ExecutionList` with its
/// `ux_friendly_pick_node`): nodes are listed depth first from each output, inputs in order;
/// then, among the nodes whose inputs have run, it takes an output first, else a node an output
/// waits for, else a node such a node waits for, else the first listed. `outputs` must be free
/// of dangling links and cycles.
fn run_order(wf: &Workflow, outputs: &[NodeId]) -> Vec<NodeId> {
    // Depth-first pre-order, as the server's recursive `add_node` lists the nodes.
    let mut listed: Vec<&str> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for out in outputs {
        let mut stack = vec![out.as_str()];
        while let Some(id) = stack.pop() {
            if index.contains_key(id) {
                continue;
            }
            let Some(node) = wf.node(id) else { continue };
            index.insert(id, listed.len());
            listed.push(id);
            let deps: Vec<&str> = node
                .inputs()
                .links()
                .map(|(_, l)| l.node.as_str())
                .collect();
            stack.extend(deps.into_iter().rev());
        }
    }
    let mut blocked_by = vec![0usize; listed.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); listed.len()];
    for (i, id) in listed.iter().enumerate() {
        let Some(node) = wf.node(id) else { continue };
        let deps: BTreeSet<usize> = node
            .inputs()
            .links()
            .filter_map(|(_, l)| index.get(l.node.as_str()).copied())
            .collect();
        blocked_by[i] = deps.len();
        for d in deps {
            users[d].push(i);
        }
    }
    let is_output: Vec<bool> = listed
        .iter()
        .map(|id| outputs.iter().any(|o| o.as_str() == *id))
        .collect();
    let feeds_output: Vec<bool> = users
        .iter()
        .map(|u| u.iter().any(|&x| is_output[x]))
        .collect();
    let priority: Vec<u8> = (0..listed.len())
        .map(|i| {
            if is_output[i] {
                0
            } else if feeds_output[i] {
                1
            } else if users[i].iter().any(|&u| feeds_output[u]) {
                2
            } else {
                3
            }
        })
        .collect();
    let mut ready: BTreeSet<(u8, usize)> = (0..listed.len())
        .filter(|&i| blocked_by[i] == 0)
        .map(|i| (priority[i], i))
        .collect();
    let mut order = Vec::with_capacity(listed.len());
    while let Some((_, i)) = ready.pop_first() {
        order.push(NodeId::from(listed[i]));
        for &u in &users[i] {
            blocked_by[u] = blocked_by[u].saturating_sub(1);
            if blocked_by[u] == 0 {
                ready.insert((priority[u], u));
            }
        }
    }
    order
}

/// A graph's shape: node ids with their classes and links, literal values left out.
pub(super) type Shape = BTreeMap<String, (String, BTreeMap<String, (String, u32)>)>;

/// The shape of `wf`.
pub(super) fn shape(wf: &Workflow) -> Shape {
    wf.iter()
        .map(|(id, node)| {
            let links = node
                .inputs()
                .links()
                .map(|(name, l)| (name.to_owned(), (l.node.as_str().to_owned(), l.output)))
                .collect();
            (
                id.as_str().to_owned(),
                (node.class_type().to_owned(), links),
            )
        })
        .collect()
}
