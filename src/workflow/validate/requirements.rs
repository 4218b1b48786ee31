//! What a graph needs of a server ([`Requirements`]), and whether a server has it
//! ([`can_run`]): for routing a job to a server that can run it.

use std::collections::BTreeSet;

use serde_json::Value;

use super::options_unchecked;
use crate::workflow::{Input, ObjectInfo, SlotType, Workflow};

/// The file extensions of model files (checkpoints, LoRAs, VAEs, text encoders, upscalers...).
const MODEL_EXTENSIONS: &[&str] = &[
    "safetensors",
    "sft",
    "ckpt",
    "pt",
    "pth",
    "bin",
    "gguf",
    "onnx",
    "pkl",
];

/// What a graph needs of a server: its node classes, and the model files it names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requirements {
    /// Every node's class type.
    pub classes: BTreeSet<String>,
    /// The model files the graph names, as `(class_type, input, file name)`, in graph order,
    /// each once: every literal string input whose value ends in a model file extension
    /// (`.safetensors`, `.sft`, `.ckpt`, `.pt`, `.pth`, `.bin`, `.gguf`, `.onnx`, `.pkl`).
    pub models: Vec<(String, String, String)>,
}

/// The classes and model files `workflow` needs. It looks at every node, reachable from an output
/// or not: the server refuses a graph with any unknown class.
pub fn required_classes_and_models(workflow: &Workflow) -> Requirements {
    let mut req = Requirements::default();
    for (_, node) in workflow.iter() {
        req.classes.insert(node.class_type().to_owned());
        for (input, value) in node.inputs().iter() {
            let Input::Value(Value::String(file)) = value else {
                continue;
            };
            let is_model = file.rsplit_once('.').is_some_and(|(_, ext)| {
                MODEL_EXTENSIONS.iter().any(|m| m.eq_ignore_ascii_case(ext))
            });
            let entry = (node.class_type().to_owned(), input.to_owned(), file.clone());
            if is_model && !req.models.contains(&entry) {
                req.models.push(entry);
            }
        }
    }
    req
}

/// Whether the server described by `info` has every class of `req`, and lists every model file
/// of `req` among the options of its input. A model input that is not a list of options there
/// (or that the class checks itself, like an upload) is taken to be there.
pub fn can_run(req: &Requirements, info: &ObjectInfo) -> bool {
    let has_classes = req.classes.iter().all(|c| info.class(c).is_some());
    has_classes
        && req.models.iter().all(|(class, input, file)| {
            let Some(spec) = info.class(class).and_then(|c| c.input(input)) else {
                return true;
            };
            match spec.ty() {
                SlotType::Combo(options) if !options_unchecked(class, spec) => {
                    options.iter().any(|o| o.as_str() == Some(file.as_str()))
                }
                _ => true,
            }
        })
}
