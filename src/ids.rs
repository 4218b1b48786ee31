//! Client ids, prompt ids and node ids.
//!
//! The core draws no randomness of its own: ids are made from numbers the caller passes in
//! (from `rand`, `getrandom`, a counter in tests), so every run of the core is reproducible.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Formats 128 random bits as a version-4 UUID string, the form ComfyUI uses for its own ids.
fn uuid_v4(bits: u128) -> String {
    // Set the version (4) and variant (10xx) bits as RFC 9562 asks.
    let b = (bits & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    // Written digit by digit: one per prompt, and `format!` twice cost more than the rest of
    // making the prompt's id.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        let nibble = (b >> (124 - 4 * i)) & 0xF;
        out.push(char::from(HEX[nibble as usize]));
    }
    out
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id as given, without checking its form.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
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
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
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
    fn ids_compare_with_str() {
        assert_eq!(NodeId::from("7"), "7");
        assert_ne!(NodeId::from("7"), "8");
    }
}
