//! Extra request headers, checked once when a [`ClientConfig`](crate::ClientConfig) is built and
//! stored as `http` types, so that nothing downstream (the HTTP/1.1 writer, the websocket
//! handshake, surf) can fail on them or be tricked by them.
//!
//! A name must be an HTTP token; a value must be visible ASCII (tabs allowed): CR, LF, NUL,
//! other control bytes and non-ASCII text are refused, which rules out header injection. The
//! headers the client writes itself (`Host`, `Content-Length`, `Connection`, the websocket's
//! `Upgrade` and `Sec-WebSocket-*`...) are refused too: a second `Content-Length` would let a
//! proxy and the server disagree on where the request ends.
//!
//! Values of secret headers (`Authorization`, `Cookie`, `X-Api-Key`, anything with `token`,
//! `secret`, `auth`... in its name, and every header an [`Auth`](crate::Auth) adds) are marked
//! sensitive and print as `<redacted>`.

use std::fmt;

use http::{HeaderName, HeaderValue};

use crate::auth::ConfigError;

/// What a redacted secret prints as.
pub const REDACTED: &str = "<redacted>";

/// Checked request headers, in order. Secret values never appear in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(HeaderName, HeaderValue)>,
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in &self.entries {
            if value.is_sensitive() {
                map.entry(&name.as_str(), &format_args!("{REDACTED}"));
            } else {
                map.entry(&name.as_str(), &value.to_str().unwrap_or_default());
            }
        }
        map.finish()
    }
}

/// Headers the client writes itself, or that steer how a request is framed or upgraded.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "keep-alive",
    "proxy-connection",
];

/// Whether a header with this name carries a secret: its value is redacted wherever headers
/// are shown.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "x-api-key" | "api-key"
    ) || [
        "token",
        "secret",
        "password",
        "passwd",
        "auth",
        "session",
        "cookie",
        "apikey",
        "api-key",
        "api_key",
        "signature",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// Checks one header: a valid, unreserved name and a visible-ASCII value. The error names the
/// header, never its value.
pub fn check(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let shown_name = || {
        let mut shown: String = name.chars().take(64).collect::<String>();
        shown = shown.escape_debug().to_string();
        if name.chars().count() > 64 {
            shown.push('…');
        }
        shown
    };
    let header_name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::InvalidHeaderName { name: shown_name() })?;
    let lower = header_name.as_str();
    if RESERVED.contains(&lower) || lower.starts_with("sec-websocket-") {
        return Err(ConfigError::ReservedHeader {
            name: lower.to_owned(),
        });
    }
    let invalid_value = || ConfigError::InvalidHeaderValue {
        name: lower.to_owned(),
    };
    // `HeaderValue` accepts bytes over 0x7f (obsolete text); surf and many servers do not, and
    // non-ASCII in a header is a mistake, so only visible ASCII and tabs pass.
    if !value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(invalid_value());
    }
    let mut header_value = HeaderValue::from_str(value).map_err(|_| invalid_value())?;
    header_value.set_sensitive(is_secret_name(lower));
    Ok((header_name, header_value))
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header after checking it (see [`check`]). Its value is redacted in `Debug` when
    /// [`is_secret_name`] says so.
    pub fn push(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        self.entries.push(check(name, value)?);
        Ok(())
    }

    /// Adds a header after checking it, its value redacted whatever its name.
    pub fn push_secret(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let (name, mut value) = check(name, value)?;
        value.set_sensitive(true);
        self.entries.push((name, value));
        Ok(())
    }

    /// Adds every header of `other` after these.
    pub fn extend(&mut self, other: &Headers) {
        self.entries.extend(other.entries.iter().cloned());
    }

    /// The headers, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.entries.iter().map(|(n, v)| (n, v))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The values of the secret headers, for scrubbing text that may have echoed them.
    pub fn secret_values(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|(_, v)| v.is_sensitive())
            .filter_map(|(_, v)| v.to_str().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_and_bad_bytes_are_refused_without_echoing_the_value() {
        for value in [
            "a\r\nX-Injected: 1",
            "a\nb",
            "a\rb",
            "nul\0",
            "bell\x07",
            "del\x7f",
            "café",
            "\u{1b}[31mred",
        ] {
            let e = check("X-Trace", value).unwrap_err();
            assert!(
                matches!(&e, ConfigError::InvalidHeaderValue { name } if name == "x-trace"),
                "{value:?}: {e:?}"
            );
            assert!(!e.to_string().contains(value), "{e}");
            assert!(!format!("{e:?}").contains(value), "{e:?}");
        }
        for name in ["", "X Bad", "X-Bad:", "X-Bad\r\n", "é", "a\nb"] {
            let e = check(name, "v").unwrap_err();
            assert!(
                matches!(e, ConfigError::InvalidHeaderName { .. }),
                "{name:?}: {e:?}"
            );
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        for name in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Sec-WebSocket-Key",
        ] {
            assert!(
                matches!(check(name, "1"), Err(ConfigError::ReservedHeader { .. })),
                "{name}"
            );
        }
        let (name, value) = check("X-Trace", "ok value\twith tab").unwrap();
        assert_eq!(name.as_str(), "x-trace");
        assert_eq!(value.to_str().unwrap(), "ok value\twith tab");
        assert!(!value.is_sensitive());
    }

    #[test]
    fn secret_values_are_redacted_in_debug() {
        let mut headers = Headers::new();
        headers.push("Authorization", "Bearer s3cret-1").unwrap();
        headers.push("X-Api-Key", "s3cret-2").unwrap();
        headers.push("Cookie", "session=s3cret-3").unwrap();
        headers.push("X-My-Token", "s3cret-4").unwrap();
        headers.push_secret("X-Plain-Name", "s3cret-5").unwrap();
        headers.push("X-Trace", "visible").unwrap();
        let shown = format!("{headers:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("\"authorization\": <redacted>"), "{shown}");
        assert!(shown.contains("visible"), "{shown}");
        assert_eq!(headers.secret_values().count(), 5);
        assert_eq!(headers.len(), 6);
    }
}
