//! UI-format workflows (what the ComfyUI frontend saves with "Save", and what a ComfyUI PNG
//! carries as `workflow`) converted to the API format, with the server's `object_info`.
//!
//! The conversion follows the frontend's own (`graphToPrompt`):
//! - **Widgets**: a node's `widgets_values` (a list, or an object by name) fill the inputs the
//!   class shows as widgets, in the class's input order; a seed's extra `control_after_generate`
//!   value and upload buttons' values are skipped; a missing value takes the declared default.
//! - **Links** (`[id, origin, slot, target, slot, type]` or objects) become `["origin", slot]`;
//!   a widget converted to an input and linked takes the link.
//! - **`Reroute`** nodes are followed through; a **`PrimitiveNode`**'s value goes into every
//!   input it feeds; `Note`, `MarkdownNote` and other frontend-only nodes are dropped.
//! - **Dynamic prompts**: a text widget marked `dynamicPrompts` loses its comments, and each
//!   `{a|b}` becomes one of its options ([`to_api_seeded`] chooses the seed).
//! - **Muted** nodes (mode 2) are dropped, and so are inputs they feed; **bypassed** nodes (mode
//!   4) are dropped and each of their outputs is fed from their input of the same type.
//! - **Subgraphs** (`definitions.subgraphs`, nodes whose type is a subgraph's id) are flattened:
//!   the inner node `7` of instance `5` becomes `"5:7"` (nested: `"5:3:7"`); the instance's
//!   widget values feed the inner widgets they were promoted from. Legacy **group nodes**
//!   (`extra.groupNodes`, type `workflow>NAME`) are flattened the same way: `"<id>:<index>"`.
//!
//! ```
//! use comfy_proxy::workflow::{ObjectInfo, ui};
//! use serde_json::json;
//! let info = ObjectInfo::from_value(&json!({
//!     "EmptyImage": {"input": {"required": {
//!         "width": ["INT", {"default": 512}], "height": ["INT", {"default": 512}]}},
//!         "output": ["IMAGE"], "output_node": false},
//!     "PreviewImage": {"input": {"required": {"images": ["IMAGE"]}}, "output": [],
//!         "output_node": true},
//! }))?;
//! let saved = json!({
//!     "nodes": [
//!         {"id": 1, "type": "EmptyImage", "mode": 0, "widgets_values": [64, 32],
//!          "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]},
//!         {"id": 2, "type": "PreviewImage", "mode": 0,
//!          "inputs": [{"name": "images", "type": "IMAGE", "link": 1}]},
//!         {"id": 3, "type": "Note", "mode": 0, "widgets_values": ["hello"]},
//!     ],
//!     "links": [[1, 1, 0, 2, 0, "IMAGE"]],
//! });
//! let wf = ui::to_api(&saved, &info)?;
//! assert_eq!(wf.len(), 2);
//! assert_eq!(wf.node("1").unwrap().input("height").unwrap().as_value(), Some(&json!(32)));
//! assert_eq!(wf.node("2").unwrap().input("images").unwrap().as_link().unwrap().node.as_str(), "1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod convert;
mod dynamic;
mod error;
mod model;
mod widgets;

use serde_json::Value;

pub use error::UiError;

use super::{ObjectInfo, Workflow};

/// How deeply subgraphs may nest inside each other.
pub const MAX_DEPTH: usize = 32;

/// How many nodes a workflow may expand to, its subgraph instances' inner nodes included.
pub const MAX_NODES: usize = 100_000;

/// Whether `doc` looks like a UI-format workflow (an object with a `nodes` list) rather than an
/// API-format graph.
pub fn is_ui_workflow(doc: &Value) -> bool {
    doc.get("nodes").is_some_and(Value::is_array)
}

/// Converts a UI-format workflow to an API-format graph, reading the node classes' inputs from
/// the server's `object_info`.
///
/// Fails, naming the node, when a class is not the server's, a link is missing, a node has too
/// few widget values, or subgraphs nest in a cycle. The graph is not validated: pass it to
/// [`validate`](fn@crate::workflow::validate) for that (a model file the server lacks is a
/// validation error, not a conversion error).
///
/// Text widgets marked `dynamicPrompts` (the prompt of `CLIPTextEncode`) are sent as the
/// frontend sends them: comments removed, and each choice `{a|b}` replaced by one option. The
/// frontend picks at random; this picks with seed 0 (see [`to_api_seeded`]).
pub fn to_api(doc: &Value, info: &ObjectInfo) -> Result<Workflow, UiError> {
    to_api_seeded(doc, info, 0)
}

/// [`to_api`], with `seed` picking the options of dynamic prompts (`{a|b}`): the same seed, the
/// same choices.
pub fn to_api_seeded(doc: &Value, info: &ObjectInfo, seed: u64) -> Result<Workflow, UiError> {
    let doc = model::UiDoc::parse(doc)?;
    convert::Converter::new(&doc, info, seed).run()
}
