//! The server's validation errors, word for word: each builder makes the `{"type", "message",
//! "details", "extra_info"}` that ComfyUI's `validate_inputs` / `validate_prompt` make for the
//! same fault (`execution.py`), with the same keys in `extra_info`.

use serde_json::{Map, Value, json};

use super::python::{self, Converted};
use crate::wire::http::ErrorInfo;
use crate::workflow::{InputSpec, SlotType};

fn error(kind: &str, message: String, details: String, extra_info: Value) -> ErrorInfo {
    ErrorInfo {
        kind: kind.to_owned(),
        message,
        details,
        extra_info,
    }
}

/// The keys of an input's options that are copied into `input_config`. ([`InputSpec`] gives
/// options one by one, so the copy names the keys ComfyUI's own nodes use.)
const OPTION_KEYS: &[&str] = &[
    "default",
    "min",
    "max",
    "step",
    "round",
    "display",
    "tooltip",
    "options",
    "multiselect",
    "multiline",
    "dynamicPrompts",
    "placeholder",
    "control_after_generate",
    "label_on",
    "label_off",
    "defaultInput",
    "forceInput",
    "rawLink",
    "lazy",
    "advanced",
    "image_upload",
    "audio_upload",
    "video_upload",
    "file_upload",
    "image_folder",
    "remote",
];

/// Whether a combo input was declared the V3 way (`["COMBO", {"options": [...]}]`) rather than
/// as a bare option list.
pub(super) fn is_named_combo(spec: &InputSpec) -> bool {
    matches!(spec.ty(), SlotType::Combo(_)) && spec.option("options").is_some()
}

/// The input's type as the server holds it: a name, or (for a bare combo) the option list.
pub(super) fn type_json(spec: &InputSpec) -> Value {
    match spec.ty() {
        SlotType::Combo(options) if !is_named_combo(spec) => Value::Array(options.clone()),
        other => Value::from(other.name()),
    }
}

/// An output's type as the server holds it (`"MODEL"`, or an option list).
pub(super) fn output_type_json(ty: &SlotType) -> Value {
    match ty {
        SlotType::Combo(options) if !options.is_empty() => Value::Array(options.clone()),
        other => Value::from(other.name()),
    }
}

/// `input_config`: `[TYPE, {options}]`.
pub(super) fn input_config(spec: &InputSpec) -> Value {
    let options: Map<String, Value> = OPTION_KEYS
        .iter()
        .filter_map(|&k| Some((k.to_owned(), spec.option(k)?.clone())))
        .collect();
    json!([type_json(spec), options])
}

pub(super) fn required_input_missing(name: &str) -> ErrorInfo {
    error(
        "required_input_missing",
        "Required input is missing".into(),
        name.into(),
        json!({"input_name": name}),
    )
}

pub(super) fn bad_linked_input(spec: &InputSpec, value: &Value) -> ErrorInfo {
    error(
        "bad_linked_input",
        "Bad linked input, must be a length-2 list of [node_id, slot_index]".into(),
        spec.name().into(),
        json!({"input_name": spec.name(), "input_config": input_config(spec), "received_value": value}),
    )
}

pub(super) fn return_type_mismatch(
    spec: &InputSpec,
    received: &SlotType,
    link: Value,
) -> ErrorInfo {
    let received = output_type_json(received);
    let details = format!(
        "{}, received_type({}) mismatch input_type({})",
        spec.name(),
        python::py_str(&received),
        python::py_str(&type_json(spec))
    );
    error(
        "return_type_mismatch",
        "Return type mismatch between linked nodes".into(),
        details,
        json!({
            "input_name": spec.name(),
            "input_config": input_config(spec),
            "received_type": received,
            "linked_node": link,
        }),
    )
}

pub(super) fn invalid_input_type(
    spec: &InputSpec,
    value: &Value,
    exception: &python::ConversionError,
) -> ErrorInfo {
    let exception = exception.to_string();
    error(
        "invalid_input_type",
        format!(
            "Failed to convert an input value to a {} value",
            spec.ty().name()
        ),
        format!("{}, {}, {exception}", spec.name(), python::py_str(value)),
        json!({
            "input_name": spec.name(),
            "input_config": input_config(spec),
            "received_value": value,
            "exception_message": exception,
        }),
    )
}

/// `value_smaller_than_min` (`bigger` false) or `value_bigger_than_max`.
pub(super) fn out_of_range(
    spec: &InputSpec,
    value: &Converted,
    bound: &Value,
    bigger: bool,
) -> ErrorInfo {
    let (kind, word, which) = if bigger {
        ("value_bigger_than_max", "bigger", "max")
    } else {
        ("value_smaller_than_min", "smaller", "min")
    };
    error(
        kind,
        format!(
            "Value {} {word} than {which} of {}",
            value.py_str(),
            python::py_str(bound)
        ),
        spec.name().into(),
        json!({
            "input_name": spec.name(),
            "input_config": input_config(spec),
            "received_value": value.to_json(),
        }),
    )
}

pub(super) fn value_not_in_list(
    spec: &InputSpec,
    value: &Converted,
    options: &[Value],
) -> ErrorInfo {
    // The server leaves out long lists (model folders can hold thousands of files).
    let (list, config) = if options.len() > 20 {
        (format!("(list of length {})", options.len()), Value::Null)
    } else {
        (
            python::py_repr(&Value::Array(options.to_vec())),
            input_config(spec),
        )
    };
    error(
        "value_not_in_list",
        "Value not in list".into(),
        format!("{}: '{}' not in {list}", spec.name(), value.py_str()),
        json!({
            "input_name": spec.name(),
            "input_config": config,
            "received_value": value.to_json(),
        }),
    )
}

/// What the server's Python raised while following a link (`KeyError` for a node the graph does
/// not have, `IndexError` for an output the class does not have).
#[derive(Debug, Clone)]
pub(super) struct Raised {
    pub(super) exception_type: &'static str,
    /// `str(exception)`: `'99'`, `tuple index out of range`.
    pub(super) message: String,
}

/// The error of an output node whose own validation raised (`exception_during_validation`).
///
/// The server names no input here; `input_name` and `linked_node` are added so a user can find
/// the link. Python's `traceback` is left empty.
pub(super) fn exception_during_validation(
    raised: Raised,
    spec: &InputSpec,
    link: Value,
) -> ErrorInfo {
    error(
        "exception_during_validation",
        "Exception when validating node".into(),
        raised.message,
        json!({
            "exception_type": raised.exception_type,
            "traceback": [],
            "input_name": spec.name(),
            "linked_node": link,
        }),
    )
}

/// The error the server puts on a node whose validation raised, when a node downstream asked
/// for it: `input_name` and `linked_node` are those of the downstream node's link, as the
/// server reports them.
pub(super) fn exception_during_inner_validation(
    spec: &InputSpec,
    link: Value,
    exception_type: &str,
    message: String,
) -> ErrorInfo {
    error(
        "exception_during_inner_validation",
        "Exception when validating inner node".into(),
        message.clone(),
        json!({
            "input_name": spec.name(),
            "input_config": input_config(spec),
            "exception_message": message,
            "exception_type": exception_type,
            "traceback": [],
            "linked_node": link,
        }),
    )
}

/// The top-level error when a node's class does not exist.
pub(super) fn invalid_prompt(node: &str, class_type: &str) -> ErrorInfo {
    error(
        "invalid_prompt",
        format!("Cannot execute because node {class_type} does not exist."),
        format!("Node ID '#{node}'"),
        json!({}),
    )
}

pub(super) fn prompt_no_outputs() -> ErrorInfo {
    error(
        "prompt_no_outputs",
        "Prompt has no outputs".into(),
        String::new(),
        json!({}),
    )
}

/// `details` lists the output nodes' own errors, one `message: details` a line.
pub(super) fn prompt_outputs_failed_validation(details: String) -> ErrorInfo {
    error(
        "prompt_outputs_failed_validation",
        "Prompt outputs failed validation".into(),
        details,
        json!({}),
    )
}

/// `error` as the server writes it.
pub(super) fn to_json(error: &ErrorInfo) -> Value {
    json!({
        "type": error.kind,
        "message": error.message,
        "details": error.details,
        "extra_info": error.extra_info,
    })
}
