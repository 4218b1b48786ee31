//! Workflows: API-format graphs, and the Flux and Qwen Image builders.
//!
//! - [`Workflow`]: an ordered graph of node id -> [`Node`] (`{"class_type", "inputs",
//!   "_meta"?}`). Build one node by node ([`Workflow::add_node`]), or load any exported
//!   API-format graph ([`Workflow::from_json`]) and write it back unchanged. Inputs are literals
//!   or [`Link`]s (`["3", 0]`); set them by node id, title or class type
//!   ([`Workflow::set_input`], [`Workflow::set`]).
//! - [`FluxParams`] and [`QwenParams`]: the original library's two text-to-image graphs, with
//!   its defaults, any number of [`Lora`]s, and sizes from [`Size`]. `build()` refuses values the
//!   server would refuse ([`limits`]) before anything is sent. Both end in a `SaveImageWebsocket`
//!   node with id [`SAVE_NODE_ID`].
//! - [`ObjectInfo`]: a typed view of the server's `GET /object_info`, and [`check_structure`],
//!   which checks a graph's classes, required inputs, links and link types against it.
//! - [`load_any`]: any workflow file a user has: API-format JSON, UI-format JSON (converted with
//!   [`ui::to_api`] and the server's `object_info`), or a PNG or WebP written by ComfyUI (its
//!   `prompt`, else its converted `workflow`; see [`image`]).
//!
//! ```
//! use comfy_proxy::workflow::{FluxParams, Lora, Size, Workflow};
//! let wf = FluxParams::new("a red fox", 42)
//!     .size(Size::parse("landscape-16-9")?)
//!     .lora(Lora::new("fox.safetensors").weight(0.7))
//!     .build()?;
//! let text = wf.to_string(); // the body's "prompt" for POST /prompt
//! assert_eq!(Workflow::from_json(&text)?, wf);
//! # Ok::<(), comfy_proxy::WorkflowError>(())
//! ```

/// A builder method that sets one field: `name(field): Type`, or `: String` for any
/// `impl Into<String>`. The doc comment comes first, inside the call.
macro_rules! setter {
    ($(#[$doc:meta])* $name:ident($field:ident): String) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.$field = value.into();
            self
        }
    };
    ($(#[$doc:meta])* $name:ident($field:ident): $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$field = value;
            self
        }
    };
}

/// Several [`setter!`]s, each ended by `;`.
macro_rules! setters {
    () => {};
    ($(#[$doc:meta])* $name:ident($field:ident): String; $($rest:tt)*) => {
        setter!($(#[$doc])* $name($field): String);
        setters!($($rest)*);
    };
    ($(#[$doc:meta])* $name:ident($field:ident): $ty:ty; $($rest:tt)*) => {
        setter!($(#[$doc])* $name($field): $ty);
        setters!($($rest)*);
    };
}

mod error;
mod flux;
mod graph;
pub mod image;
pub mod limits;
mod load;
mod node;
mod object_info;
mod presets;
mod qwen;
pub mod ui;
pub mod validate;

pub use error::{LinkError, WorkflowError};
pub use flux::FluxParams;
pub use graph::Workflow;
pub use load::{FileKind, LoadError, LoadedWorkflow, detect, load_any};
pub use node::{Input, Inputs, Link, Node};
pub use object_info::{
    InputSpec, NodeClass, ObjectInfo, SlotType, StructuralError, check_structure,
};
pub use presets::{Lora, Size};
pub use qwen::QwenParams;
pub use validate::{
    Requirements, ValidationReport, can_run, required_classes_and_models, validate,
    validate_partial,
};

/// The id the builders give their `SaveImageWebsocket` output node, as the original library does.
pub const SAVE_NODE_ID: &str = "save_image_websocket_node";
