//! Client ids, prompt ids and node ids.
//!
//! The core draws no randomness of its own: ids are made from numbers the caller passes in
//! (from `rand`, `getrandom`, a counter in tests), so every run of the core is reproducible.

use std::fmt;

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Formats 128 random bits as a version-4 UUID string, the form ComfyUI uses for its own ids.
fn uuid_v4(bits: u128) -> Arc<str> {
    // Set the version (4) and variant (10xx) bits as RFC 9562 asks.
    let b = (bits & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    // Written digit by digit: one per prompt, and `format!` twice cost more than the rest of
    // making the prompt's id.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            at += 1;
        }
        let nibble = (b >> (124 - 4 * i)) & 0xF;
        out[at] = HEX[nibble as usize];
        at += 1;
    }
    Arc::from(std::str::from_utf8(&out).unwrap_or_default())
}

/// An id's text, made from the decoder's text in one allocation, the id's own. (serde's own
/// `String` and `Cow<str>` always make a `String` first: a second allocation and copy, for
/// each of the dozens of ids a job's messages carry.)
struct IdText;

impl de::Visitor<'_> for IdText {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Arc<str>, E> {
        Ok(Arc::from(text))
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Cloning one is cheap: the text is shared, not copied.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps an id as given, without checking its form.
            pub fn new(id: impl Into<String>) -> Self {
                Self(Arc::from(id.into()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(Arc::from(id))
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(Arc::from(id))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Looks an id up by its text in a map keyed by ids (the text hashes as the id does).
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(IdText).map(Self)
            }
        }
    };
}

string_id!(
    /// The id a client announces on the websocket (`/ws?clientId=ID`) and sends with each prompt.
    ///
    /// The server keeps one socket per client id: two connections must not share one.
    ///
    /// ```
    /// use comfy_proxy::ClientId;
    /// let id = ClientId::from_random(0x1234);
    /// assert_eq!(id.as_str().len(), 36);
    /// ```
    ClientId
);

string_id!(
    /// The id of one submitted prompt. The client chooses it, so that it can look the prompt up
    /// in `/history` and `/queue` even when the response to `POST /prompt` was lost.
    ///
    /// ```
    /// use comfy_proxy::PromptId;
    /// let id = PromptId::from_random(u128::MAX);
    /// assert_eq!(id.as_str(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    /// ```
    PromptId
);

string_id!(
    /// The id of a node in a workflow graph (`"3"`, `"save_image_websocket_node"`).
    NodeId
);

impl ClientId {
    /// A client id in UUID form made from 128 random bits that the caller drew.
    pub fn from_random(bits: u128) -> Self {
        Self(uuid_v4(bits))
    }
}

impl PromptId {
    /// A prompt id in UUID form made from 128 random bits that the caller drew.
    pub fn from_random(bits: u128) -> Self {
        Self(uuid_v4(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_version_and_variant_bits() {
        assert_eq!(
            PromptId::from_random(0).as_str(),
            "00000000-0000-4000-8000-000000000000"
        );
        let id = ClientId::from_random(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(id.as_str(), "01234567-89ab-4def-8123-456789abcdef");
    }

    #[test]
    fn ids_are_json_strings_both_ways() {
        let id: PromptId = serde_json::from_str(r#""p-1""#).unwrap();
        assert_eq!(id, "p-1");
        // With an escape the text cannot be borrowed; the id is the same.
        let escaped: PromptId = serde_json::from_str(r#""p\u002d1""#).unwrap();
        assert_eq!(escaped, id);
        // From a `Value`, whose string is handed over owned.
        let owned: PromptId = serde_json::from_value(serde_json::json!("p-1")).unwrap();
        assert_eq!(owned, id);
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""p-1""#);
        assert!(
            serde_json::from_str::<NodeId>("7").is_err(),
            "a number is not an id"
        );
        let clone = id.clone();
        assert_eq!(
            clone.as_str().as_ptr(),
            id.as_str().as_ptr(),
            "a clone shares the text"
        );
    }

    #[test]
    fn ids_compare_with_str() {
        assert_eq!(NodeId::from("7"), "7");
        assert_ne!(NodeId::from("7"), "8");
    }
}
