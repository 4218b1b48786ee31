//! The plumbing the response decoders share: status and UTF-8 checks, lenient numbers and
//! strings, objects read in order.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Unexpected, Visitor};

use super::HttpResponse;
use crate::error::ProtocolError;

/// Accepts any 2xx status; quotes the body of any other.
pub(super) fn check_status(
    resp: &HttpResponse,
    context: &'static str,
) -> Result<(), ProtocolError> {
    if (200..300).contains(&resp.status) {
        Ok(())
    } else {
        Err(ProtocolError::status(context, resp.status, &resp.body))
    }
}

fn utf8<'a>(resp: &'a HttpResponse, context: &'static str) -> Result<&'a str, ProtocolError> {
    std::str::from_utf8(&resp.body).map_err(|_| ProtocolError::BadUtf8 { context })
}

/// Parses the body, whatever the status, as JSON of any kind.
pub(super) fn parse_any<'a, T: Deserialize<'a>>(
    resp: &'a HttpResponse,
    context: &'static str,
) -> Result<T, ProtocolError> {
    serde_json::from_str(utf8(resp, context)?).map_err(|e| ProtocolError::json(context, &e))
}

/// Parses the body, whatever the status, as a JSON object. (A derived struct decoder would also
/// take a list of its fields' values: `[]` would be a struct of defaults.)
pub(super) fn parse<'a, T: Deserialize<'a>>(
    resp: &'a HttpResponse,
    context: &'static str,
) -> Result<T, ProtocolError> {
    let text = utf8(resp, context)?;
    let start = text.trim_start();
    if !start.is_empty() && !start.starts_with('{') {
        return Err(ProtocolError::BadJson {
            context,
            message: "expected a JSON object".to_owned(),
        });
    }
    serde_json::from_str(text).map_err(|e| ProtocolError::json(context, &e))
}

/// Checks for a 2xx status, then parses the body as a JSON object.
pub(super) fn parse_ok<'a, T: Deserialize<'a>>(
    resp: &'a HttpResponse,
    context: &'static str,
) -> Result<T, ProtocolError> {
    check_status(resp, context)?;
    parse(resp, context)
}

/// A string that may also be written as `null` (read as empty).
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A byte count or size, written as an integer or an integral float.
pub(super) struct Size(pub(super) u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Size, E> {
                if v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
                    Ok(Size(v as u64))
                } else {
                    Err(E::invalid_value(Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON object read as its entries, in the order they were sent.
pub(super) struct Entries<K, V>(pub(super) Vec<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Entries<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for Vis<K, V> {
            type Value = Entries<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Vis(PhantomData))
    }
}
