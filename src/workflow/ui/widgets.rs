//! Widget values: which inputs of a node class the frontend shows as widgets, and how a node's
//! `widgets_values` line up with them.
//!
//! The frontend makes one widget per input that is not a link type (`INT`, `FLOAT`, `STRING`,
//! `BOOLEAN`, a combo, and its own widget types such as `WEBCAM`), in the class's input order
//! (required, then optional), unless the input is `forceInput`. An `INT` or combo with
//! `control_after_generate` (seeds) gets a second widget right after it, whose value
//! (`"fixed"`, `"increment"`, `"decrement"`, `"randomize"`) is saved but not sent. Upload buttons
//! (`image_upload`, ...) add a value at the end, which is not sent either.

use serde_json::Value;

use super::UiError;
use super::model::{UiNode, WidgetValues};
use crate::workflow::{InputSpec, NodeClass, SlotType};

/// Input types the frontend draws as widgets besides the plain values (its own widget table,
/// and the widgets its core extensions register).
const FRONTEND_WIDGET_TYPES: &[&str] = &[
    "AUDIO_RECORD",
    "BOUNDING_BOX",
    "CHART",
    "COLOR",
    "CURVE",
    "GALLERIA",
    "IMAGECOMPARE",
    "IMAGEUPLOAD",
    "LOAD_3D",
    "LOAD_3D_ANIMATION",
    "MARKDOWN",
    "PAINTER",
    "TEXTAREA",
    "WEBCAM",
];

/// The values a seed's control widget takes.
const CONTROL_VALUES: &[&str] = &["fixed", "increment", "decrement", "randomize"];

/// Whether the frontend shows `spec` as a widget (else only as an input slot).
pub(crate) fn is_widget(spec: &InputSpec) -> bool {
    if spec.option("forceInput").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    match spec.ty() {
        SlotType::Int | SlotType::Float | SlotType::String | SlotType::Boolean => true,
        SlotType::Combo(_) => true,
        SlotType::Custom(name) => FRONTEND_WIDGET_TYPES.contains(&name.as_str()),
    }
}

/// Whether the widget for `spec` is followed by a control widget ("control after generate").
pub(crate) fn has_control(spec: &InputSpec) -> bool {
    let flagged = match spec.option("control_after_generate") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(_)) => true,
        _ => false,
    };
    // Servers before the option existed gave every seed a control widget.
    flagged || (matches!(spec.ty(), SlotType::Int) && matches!(spec.name(), "seed" | "noise_seed"))
}

/// A control widget's saved value: one of [`CONTROL_VALUES`], or a boolean (old saves).
fn is_control_value(value: Option<&Value>) -> bool {
    match value {
        Some(Value::String(s)) => CONTROL_VALUES.contains(&s.as_str()),
        Some(Value::Bool(_)) => true,
        _ => false,
    }
}

/// The class's widgets, in the order their values are saved.
pub(crate) fn widget_specs(class: &NodeClass) -> Vec<&InputSpec> {
    class.inputs().iter().filter(|s| is_widget(s)).collect()
}

/// Lists are links in the API format: the frontend wraps a list value (a multi-select combo)
/// as `{"__value__": [...]}`, which the server unwraps.
pub(crate) fn wrap(value: Value) -> Value {
    match value {
        Value::Array(list) => {
            let mut obj = serde_json::Map::new();
            obj.insert("__value__".into(), Value::Array(list));
            Value::Object(obj)
        }
        other => other,
    }
}

/// Whether a required input of `class` has an upload button (`image_upload: true`, ...).
pub(crate) fn has_upload(class: &NodeClass) -> bool {
    class.inputs().iter().any(|s| {
        s.is_required()
            && [
                "image_upload",
                "video_upload",
                "audio_upload",
                "file_upload",
            ]
            .iter()
            .any(|k| s.option(k).and_then(Value::as_bool) == Some(true))
    })
}

/// A cursor over a node's saved widget values, in widget order.
pub(crate) struct ValueCursor<'a> {
    values: &'a [Value],
    at: usize,
}

impl<'a> ValueCursor<'a> {
    pub fn new(values: &'a [Value]) -> Self {
        Self { values, at: 0 }
    }

    /// The value for the widget of `spec`, stepping over its control value if it has one.
    pub fn take(&mut self, spec: &InputSpec) -> Option<&'a Value> {
        let value = self.values.get(self.at)?;
        self.at += 1;
        if has_control(spec) && is_control_value(self.values.get(self.at)) {
            self.at += 1;
        }
        Some(value)
    }

    /// Steps over one value (a widget whose value is not sent).
    pub fn skip(&mut self) {
        self.at += 1;
    }
}

/// The widget inputs of `node` (an instance of `class`): (name, value) in widget order.
///
/// A missing value takes the input's declared default, as the frontend does for a widget that
/// a node gained after the workflow was saved; a required widget with neither is an error.
/// Values beyond the last widget (upload buttons, extensions' own widgets) are ignored.
pub(crate) fn widget_values(
    exec_id: &str,
    node: &UiNode,
    class: &NodeClass,
) -> Result<Vec<(String, Value)>, UiError> {
    let specs = widget_specs(class);
    let mut out = Vec::with_capacity(specs.len());
    let mut cursor = ValueCursor::new(match &node.widgets {
        Some(WidgetValues::List(l)) => l,
        _ => &[],
    });
    let mut upload = has_upload(class);
    for spec in &specs {
        if upload && !spec.is_required() {
            cursor.skip();
            upload = false;
        }
        let saved = match &node.widgets {
            Some(WidgetValues::Map(m)) => m.get(spec.name()),
            _ => cursor.take(spec),
        };
        let value = match (saved, spec.default_value()) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) if !spec.is_required() => continue,
            (None, None) => match spec.ty() {
                SlotType::Combo(options) if !options.is_empty() => options[0].clone(),
                _ => return Err(bad_count(exec_id, node, class, &specs)),
            },
        };
        out.push((spec.name().to_owned(), wrap(value)));
    }
    Ok(out)
}

fn bad_count(exec_id: &str, node: &UiNode, class: &NodeClass, specs: &[&InputSpec]) -> UiError {
    let found = match &node.widgets {
        Some(WidgetValues::List(l)) => l.len(),
        Some(WidgetValues::Map(m)) => m.len(),
        None => 0,
    };
    UiError::BadWidgetCount {
        node: exec_id.to_owned(),
        class: class.name().to_owned(),
        expected: specs
            .iter()
            .map(|s| {
                if has_control(s) {
                    format!("{}+control", s.name())
                } else {
                    s.name().to_owned()
                }
            })
            .collect(),
        found,
    }
}
