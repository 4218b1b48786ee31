//! The few pieces of Python the server's validation leans on, done over JSON values: `int()`,
//! `float()`, `str()` and `bool()` of an input value, `==` and `<` between numbers, and `str()` /
//! `repr()` for the text of the messages (`Value 0 smaller than min of 1`, `'a.sft' not in
//! ['b.sft']`).
//!
//! Integers are held as `i128`: every JSON integer fits, and so does every value an `INT` input
//! accepts. Python's integers are unbounded; beyond `i128` the conversion saturates.

use std::cmp::Ordering;
use std::fmt::{self, Write as _};

use serde_json::{Number, Value};

/// A value after the server converted it to the input's type.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Converted {
    /// `int(val)`.
    Int(i128),
    /// `float(val)`.
    Float(f64),
    /// Anything else (`str(val)`, `bool(val)`, or the value as sent).
    Json(Value),
}

impl Converted {
    /// The value as JSON, for `received_value` (a NaN or an infinity, which JSON cannot hold,
    /// becomes `null`).
    pub(super) fn to_json(&self) -> Value {
        match self {
            Self::Int(i) => int_json(*i),
            Self::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Json(v) => v.clone(),
        }
    }

    /// `str(val)`.
    pub(super) fn py_str(&self) -> String {
        match self {
            Self::Int(i) => i.to_string(),
            Self::Float(f) => float_repr(*f),
            Self::Json(v) => py_str(v),
        }
    }

    /// `val < bound` / `val > bound` as Python orders numbers; `None` when either side is not a
    /// number (the server would not compare them either).
    pub(super) fn cmp_number(&self, bound: &Value) -> Option<Ordering> {
        let this = match self {
            Self::Int(i) => Num::Int(*i),
            Self::Float(f) => Num::Float(*f),
            Self::Json(v) => Num::of(v)?,
        };
        this.cmp(Num::of(bound)?)
    }

    /// `val == option`, as Python's `in` on a list compares.
    pub(super) fn py_eq(&self, option: &Value) -> bool {
        match self {
            Self::Json(v) => py_eq(v, option),
            _ => Num::of(option).is_some_and(|n| self.cmp_number_num(n) == Some(Ordering::Equal)),
        }
    }

    fn cmp_number_num(&self, other: Num) -> Option<Ordering> {
        match self {
            Self::Int(i) => Num::Int(*i).cmp(other),
            Self::Float(f) => Num::Float(*f).cmp(other),
            Self::Json(v) => Num::of(v)?.cmp(other),
        }
    }
}

fn int_json(i: i128) -> Value {
    if let Ok(i) = i64::try_from(i) {
        Value::from(i)
    } else if let Ok(u) = u64::try_from(i) {
        Value::from(u)
    } else {
        Number::from_f64(i as f64).map_or(Value::Null, Value::Number)
    }
}

/// A number as Python compares it (`bool` counts: `True == 1`).
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn of(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(Self::Int(i128::from(*b))),
            Value::Number(n) => Some(number(n)),
            _ => None,
        }
    }

    fn cmp(self, other: Self) -> Option<Ordering> {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }
}

fn number(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Num::Int(i128::from(u))
    } else {
        Num::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Why `int(val)` or `float(val)` raised; its `Display` is Python's exception message, which the
/// validator reports as `exception_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ConversionError {
    /// `int("red")`: a string that is not a base-10 integer literal.
    IntLiteral(String),
    /// `int(None)`: a value of a type `int()` does not take (Python's type name).
    IntArgument(&'static str),
    /// `float("red")`: a string that is not a float literal.
    FloatLiteral(String),
    /// `float(None)`: a value of a type `float()` does not take (Python's type name).
    FloatArgument(&'static str),
}

impl fmt::Display for ConversionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IntLiteral(s) => {
                write!(f, "invalid literal for int() with base 10: {}", repr_str(s))
            }
            Self::IntArgument(ty) => write!(
                f,
                "int() argument must be a string, a bytes-like object or a real number, not '{ty}'"
            ),
            Self::FloatLiteral(s) => {
                write!(f, "could not convert string to float: {}", repr_str(s))
            }
            Self::FloatArgument(ty) => write!(
                f,
                "float() argument must be a string or a real number, not '{ty}'"
            ),
        }
    }
}

/// `int(val)`; the error is Python's exception.
pub(super) fn to_int(value: &Value) -> Result<Converted, ConversionError> {
    match value {
        Value::Bool(b) => Ok(Converted::Int(i128::from(*b))),
        Value::Number(n) => Ok(Converted::Int(match number(n) {
            Num::Int(i) => i,
            // `as` truncates toward zero and saturates, as `int(2.7) == 2` (JSON has no NaN).
            Num::Float(f) => f as i128,
        })),
        Value::String(s) => parse_int(s)
            .map(Converted::Int)
            .ok_or_else(|| ConversionError::IntLiteral(s.clone())),
        other => Err(ConversionError::IntArgument(type_name(other))),
    }
}

/// `float(val)`; the error is Python's exception.
pub(super) fn to_float(value: &Value) -> Result<Converted, ConversionError> {
    match value {
        Value::Bool(b) => Ok(Converted::Float(f64::from(u8::from(*b)))),
        Value::Number(n) => Ok(Converted::Float(number(n).as_f64())),
        Value::String(s) => parse_float(s)
            .map(Converted::Float)
            .ok_or_else(|| ConversionError::FloatLiteral(s.clone())),
        other => Err(ConversionError::FloatArgument(type_name(other))),
    }
}

/// `str(val)`.
pub(super) fn to_str(value: &Value) -> Converted {
    Converted::Json(Value::String(py_str(value)))
}

/// `bool(val)`: Python's truthiness.
pub(super) fn to_bool(value: &Value) -> Converted {
    let truthy = match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => number(n).as_f64() != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    };
    Converted::Json(Value::Bool(truthy))
}

/// Python's name for the type a JSON value decodes to.
pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Python's `int(s)` in base 10: surrounding whitespace, a sign, digits with single underscores
/// between them.
fn parse_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = without_underscores(digits)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: i128 = 0;
    for b in digits.bytes() {
        n = n.saturating_mul(10).saturating_add(i128::from(b - b'0'));
    }
    Some(if negative { -n } else { n })
}

/// Python's `float(s)`: Rust's grammar is Python's (`1.`, `.5`, `1e5`, `inf`, `nan`, any case),
/// once the underscores Python allows between digits are gone.
fn parse_float(s: &str) -> Option<f64> {
    without_underscores(s.trim())?.parse().ok()
}

/// `s` without its underscores, if each sits between two digits; else `None`.
fn without_underscores(s: &str) -> Option<String> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            let before = i > 0 && b[i - 1].is_ascii_digit();
            let after = b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !(before && after) {
                return None;
            }
        }
    }
    Some(s.replace('_', ""))
}

/// `a == b` between two JSON values as Python compares what they decode to.
pub(super) fn py_eq(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (Num::of(a), Num::of(b)) {
        return x.cmp(y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| py_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => a == b,
    }
}

/// `str(value)` of what a JSON value decodes to in Python.
pub(super) fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// `repr(value)` of what a JSON value decodes to in Python (`['a', 1, None, True]`).
pub(super) fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

fn write_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => match number(n) {
            Num::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Num::Float(f) => out.push_str(&float_repr(f)),
        },
        Value::String(s) => out.push_str(&repr_str(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&repr_str(key));
                out.push_str(": ");
                write_repr(out, item);
            }
            out.push('}');
        }
    }
}

/// `repr(s)`: single quotes, unless the text holds a `'` and no `"`.
pub(super) fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `repr(f)` for a float: the shortest digits that read back the same, plain from 1e-4 up to
/// 1e16 (`1.0`, `0.5`), else scientific with a signed two-digit exponent (`1e+16`, `1.5e-05`).
pub(super) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 || (1e-4..1e16).contains(&f.abs()) {
        let plain = format!("{f}");
        return if plain.contains('.') {
            plain
        } else {
            plain + ".0"
        };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn int_conversion_as_python() {
        let ok = |v: Value| to_int(&v).unwrap();
        assert_eq!(ok(json!(7)), Converted::Int(7));
        assert_eq!(ok(json!(2.7)), Converted::Int(2));
        assert_eq!(ok(json!(-2.7)), Converted::Int(-2));
        assert_eq!(ok(json!(true)), Converted::Int(1));
        assert_eq!(ok(json!(" 1_000 ")), Converted::Int(1000));
        assert_eq!(ok(json!("-5")), Converted::Int(-5));
        assert_eq!(
            ok(json!(18446744073709551615u64)),
            Converted::Int(18446744073709551615)
        );
        let err = |v: Value| to_int(&v).unwrap_err().to_string();
        assert_eq!(
            err(json!("red")),
            "invalid literal for int() with base 10: 'red'"
        );
        assert_eq!(
            err(json!("1.5")),
            "invalid literal for int() with base 10: '1.5'"
        );
        assert_eq!(
            err(json!("1__0")),
            "invalid literal for int() with base 10: '1__0'"
        );
        assert_eq!(err(json!("")), "invalid literal for int() with base 10: ''");
        assert_eq!(
            err(json!(null)),
            "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"
        );
        assert!(err(json!({"a": 1})).ends_with("not 'dict'"));
    }

    #[test]
    fn float_conversion_as_python() {
        let ok = |v: Value| to_float(&v).unwrap();
        assert_eq!(ok(json!(3)), Converted::Float(3.0));
        assert_eq!(ok(json!(" 1e3 ")), Converted::Float(1000.0));
        assert_eq!(ok(json!(".5")), Converted::Float(0.5));
        assert_eq!(ok(json!("1_0.2_5")), Converted::Float(10.25));
        assert_eq!(ok(json!("-Infinity")), Converted::Float(f64::NEG_INFINITY));
        assert_eq!(
            to_float(&json!("red")).unwrap_err().to_string(),
            "could not convert string to float: 'red'"
        );
        assert_eq!(
            to_float(&json!(null)).unwrap_err(),
            ConversionError::FloatArgument("NoneType")
        );
        assert_eq!(
            to_float(&json!(null)).unwrap_err().to_string(),
            "float() argument must be a string or a real number, not 'NoneType'"
        );
    }

    #[test]
    fn text_as_python_writes_it() {
        assert_eq!(float_repr(0.0), "0.0");
        assert_eq!(float_repr(1.0), "1.0");
        assert_eq!(float_repr(0.1), "0.1");
        assert_eq!(float_repr(1e16), "1e+16");
        assert_eq!(float_repr(1.5e-5), "1.5e-05");
        assert_eq!(float_repr(f64::INFINITY), "inf");
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("a\n'\"\u{1}"), "'a\\n\\'\"\\x01'");
        assert_eq!(
            py_repr(&json!(["a", 1, 2.0, null, true, {"k": "v"}])),
            "['a', 1, 2.0, None, True, {'k': 'v'}]"
        );
        assert_eq!(py_str(&json!("plain")), "plain");
        assert_eq!(to_str(&json!(null)), Converted::Json(json!("None")));
        assert_eq!(to_bool(&json!("")), Converted::Json(json!(false)));
        assert_eq!(to_bool(&json!(0.5)), Converted::Json(json!(true)));
    }

    #[test]
    fn comparisons_as_python() {
        assert!(py_eq(&json!(1), &json!(1.0)));
        assert!(py_eq(&json!(true), &json!(1)));
        assert!(!py_eq(&json!("1"), &json!(1)));
        assert!(py_eq(&json!([1, "a"]), &json!([1.0, "a"])));
        assert!(Converted::Int(1).py_eq(&json!(1.0)));
        assert_eq!(
            Converted::Int(0).cmp_number(&json!(1)),
            Some(Ordering::Less)
        );
        assert_eq!(
            Converted::Int(18446744073709551615).cmp_number(&json!(18446744073709551615u64)),
            Some(Ordering::Equal)
        );
        assert_eq!(Converted::Float(f64::NAN).cmp_number(&json!(1)), None);
        assert_eq!(Converted::Json(json!("a")).cmp_number(&json!(1)), None);
        assert_eq!(Converted::Float(2.5).to_json(), json!(2.5));
        assert_eq!(Converted::Float(f64::INFINITY).to_json(), Value::Null);
    }
}
