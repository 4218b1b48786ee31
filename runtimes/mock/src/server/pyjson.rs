//! JSON as the real server writes it: Python's `json.dumps` with its default `", "` and `": "`
//! separators and `ensure_ascii` escaping, keys in insertion order.

use std::fmt::Write as _;

use serde_json::{Number, Value};

/// `value` as `json.dumps(value)` writes it.
pub(crate) fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// A websocket message `{"type": kind, "data": data}`.
pub(crate) fn message(kind: &str, data: Value) -> String {
    let mut out = String::from("{\"type\": ");
    write_str(&mut out, kind);
    out.push_str(", \"data\": ");
    write_value(&mut out, &data);
    out.push('}');
    out
}

/// The text of `s` as it appears between the quotes of a JSON string.
pub(crate) fn escaped(s: &str) -> String {
    let mut out = String::new();
    write_str(&mut out, s);
    out.pop();
    out.remove(0);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, key);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Integers as integers; floats as Python's `repr` writes them: the shortest digits that read
/// back the same, in plain notation from 1e-4 up to 1e16 (`1.0`, `0.5`), else scientific with a
/// signed two-digit exponent (`1e+16`, `1.5e-05`).
fn write_number(out: &mut String, n: &Number) {
    let Some(f) = n.as_f64().filter(|_| n.is_f64()) else {
        let _ = write!(out, "{n}");
        return;
    };
    let magnitude = f.abs();
    if f == 0.0 || (1e-4..1e16).contains(&magnitude) {
        let plain = format!("{f}");
        out.push_str(&plain);
        if !plain.contains('.') {
            out.push_str(".0");
        }
        return;
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    let _ = write!(out, "{mantissa}e{sign}{digits:0>2}");
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn python_style() {
        let v = json!({"a": [1, 2.0, null, true], "b": {}, "c": [], "é": "x\"y\\\n\u{1}😀", "d": 1e16, "e": 1e-5, "f": 1.5e-7, "g": 1e15, "h": -0.0, "i": 123.25});
        assert_eq!(
            dumps(&v),
            r#"{"a": [1, 2.0, null, true], "b": {}, "c": [], "\u00e9": "x\"y\\\n\u0001\ud83d\ude00", "d": 1e+16, "e": 1e-05, "f": 1.5e-07, "g": 1000000000000000.0, "h": -0.0, "i": 123.25}"#
        );
        assert_eq!(escaped("a\"b"), "a\\\"b");
        assert_eq!(
            message("status", json!({"sid": "x"})),
            r#"{"type": "status", "data": {"sid": "x"}}"#
        );
    }

    /// Every text frame the real server sent is written back byte for byte.
    #[test]
    fn recorded_frames_round_trip() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let t = comfy_proxy::transcript::Transcript::parse(&text).unwrap();
            for r in &t.records {
                if let comfy_proxy::transcript::RecordKind::WsText { text } = &r.kind {
                    let v: Value = serde_json::from_str(text).unwrap();
                    assert_eq!(&dumps(&v), text, "{}", path.display());
                    checked += 1;
                }
            }
        }
        assert!(checked > 100);
    }
}
