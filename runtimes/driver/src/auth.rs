//! Authentication and extra headers, applied to HTTP and the websocket alike.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;

use crate::headers::{Headers, REDACTED};

/// A mistake in a [`ClientConfig`](crate::ClientConfig), found when it is built: the caller's
/// to fix, apart from anything a server does. Never echoes a header's value.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A root CA file could not be read.
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// Root CA bytes hold no usable certificate.
    CaCertificate {
        /// Where the bytes came from (a file name, or `PEM bytes`).
        origin: String,
        /// What is wrong with them.
        problem: CertificateProblem,
    },
    /// A header name is empty or holds bytes a header name cannot (spaces, `:`, CR, LF...).
    InvalidHeaderName {
        /// The name, with anything unprintable escaped.
        name: String,
    },
    /// A header the client writes itself, or that changes how a request is framed or
    /// upgraded (`Host`, `Content-Length`, `Transfer-Encoding`, `Connection`, `Upgrade`,
    /// `Sec-WebSocket-*`...).
    ReservedHeader {
        /// The header's name.
        name: String,
    },
    /// A header value holds bytes a header value cannot (CR, LF, NUL, other control bytes or
    /// non-ASCII text). The value itself is not repeated: it may be a secret.
    InvalidHeaderValue {
        /// The header's name.
        name: String,
    },
}

/// What is wrong with a root CA certificate.
#[derive(Debug)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// The PEM text does not parse.
    Pem(futures_rustls::pki_types::pem::Error),
    /// There is no `CERTIFICATE` section.
    NoCertificate,
    /// A certificate parses as PEM but cannot serve as a trust anchor.
    Unusable(futures_rustls::rustls::Error),
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pem(e) => write!(f, "not valid PEM ({e})"),
            Self::NoCertificate => f.write_str("no CERTIFICATE section found"),
            Self::Unusable(e) => write!(f, "not a usable CA certificate ({e})"),
        }
    }
}

impl std::error::Error for CertificateProblem {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Pem(e) => Some(e),
            Self::NoCertificate => None,
            Self::Unusable(e) => Some(e),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadCaFile { path, source } => {
                write!(
                    f,
                    "cannot read the CA certificate {}: {source}",
                    path.display()
                )
            }
            Self::CaCertificate { origin, problem } => {
                write!(f, "CA certificate {origin}: {problem}")
            }
            Self::InvalidHeaderName { name } => write!(f, "invalid header name \"{name}\""),
            Self::ReservedHeader { name } => write!(
                f,
                "header {name} is written by the client itself and cannot be set"
            ),
            Self::InvalidHeaderValue { name } => write!(
                f,
                "invalid value for header {name}: CR, LF, other control bytes and non-ASCII text are not allowed"
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ReadCaFile { source, .. } => Some(source),
            Self::CaCertificate { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// How to authenticate to a server (or the proxy in front of it). Secrets never appear in
/// `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// No authentication.
    #[default]
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// `Authorization: Basic base64(USER:PASSWORD)`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// Any header, e.g. `X-Api-Key`.
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: String,
    },
    /// A query parameter added to every URL, e.g. `token=...`.
    Query {
        /// Parameter name.
        name: String,
        /// Parameter value.
        value: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("Auth::None"),
            Self::Bearer(_) => write!(f, "Auth::Bearer({REDACTED})"),
            Self::Basic { user, .. } => {
                write!(f, "Auth::Basic {{ user: {user:?}, password: {REDACTED} }}")
            }
            Self::Header { name, .. } => {
                write!(f, "Auth::Header {{ name: {name:?}, value: {REDACTED} }}")
            }
            Self::Query { name, .. } => {
                write!(f, "Auth::Query {{ name: {name:?}, value: {REDACTED} }}")
            }
        }
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Auth {
    /// The headers this auth adds, checked (see [`crate::headers::check`]) and all marked
    /// secret. A token or password with CR, LF or other bytes a header cannot hold is an error
    /// naming the header, never the secret.
    pub fn headers(&self) -> Result<Headers, ConfigError> {
        let mut headers = Headers::new();
        match self {
            Self::None | Self::Query { .. } => {}
            Self::Bearer(token) => {
                headers.push_secret("Authorization", &format!("Bearer {token}"))?
            }
            Self::Basic { user, password } => {
                let raw =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                headers.push_secret("Authorization", &format!("Basic {raw}"))?;
            }
            Self::Header { name, value } => headers.push_secret(name, value)?,
        }
        Ok(headers)
    }

    /// `path_and_query` with this auth's query parameter added, if it has one. The result
    /// carries the secret: send it, never show it (see [`Auth::shown_query`]).
    pub fn apply_query(&self, path_and_query: &str) -> String {
        self.query_with(path_and_query, encode)
    }

    /// `path_and_query` as [`Auth::apply_query`] makes it, with the secret replaced by
    /// `<redacted>`: for error messages, logs and transcripts.
    pub fn shown_query(&self, path_and_query: &str) -> String {
        self.query_with(path_and_query, |_| REDACTED.to_owned())
    }

    fn query_with(&self, path_and_query: &str, value_of: impl Fn(&str) -> String) -> String {
        match self {
            Self::Query { name, value } => {
                let sep = if path_and_query.contains('?') {
                    '&'
                } else {
                    '?'
                };
                format!("{path_and_query}{sep}{}={}", encode(name), value_of(value))
            }
            _ => path_and_query.to_owned(),
        }
    }

    /// The secret strings this auth sends, in every form they take on the wire: for
    /// [`Redactor`].
    pub fn secrets(&self) -> Vec<String> {
        match self {
            Self::None => Vec::new(),
            Self::Bearer(token) => vec![token.clone()],
            Self::Basic { user, password } => vec![
                password.clone(),
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
            ],
            Self::Header { value, .. } => vec![value.clone()],
            Self::Query { value, .. } => vec![value.clone(), encode(value)],
        }
    }
}

/// Scrubs known secrets (tokens, passwords, secret header values) out of text that may have
/// echoed them: error messages from lower layers, a server's replies, transcript lines. A
/// second line of defence behind the structured redaction of headers and URLs; secrets of
/// fewer than 4 characters are left alone (scrubbing them would mangle ordinary text).
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: std::sync::Arc<[String]>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// The shortest secret scrubbed.
    pub const MIN_LEN: usize = 4;

    /// A redactor for these secrets.
    pub fn new<S: Into<String>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(Into::into)
            .filter(|s| s.len() >= Self::MIN_LEN)
            .collect();
        // Longest first, so that a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            secrets: secrets.into(),
        }
    }

    /// Whether there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug() {
        for auth in [
            Auth::Bearer("s3cret".into()),
            Auth::Basic {
                user: "u".into(),
                password: "s3cret".into(),
            },
            Auth::Header {
                name: "X-Key".into(),
                value: "s3cret".into(),
            },
            Auth::Query {
                name: "token".into(),
                value: "s3cret".into(),
            },
        ] {
            assert!(!format!("{auth:?}").contains("s3cret"), "{auth:?}");
        }
    }

    #[test]
    fn headers_and_query() {
        assert_eq!(
            Auth::Basic {
                user: "a".into(),
                password: "b".into()
            }
            .headers()
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .1,
            "Basic YTpi"
        );
        assert_eq!(
            Auth::Query {
                name: "t".into(),
                value: "a b".into()
            }
            .apply_query("/ws?clientId=c"),
            "/ws?clientId=c&t=a%20b"
        );
        assert_eq!(
            Auth::Query {
                name: "t".into(),
                value: "x".into()
            }
            .apply_query("/queue"),
            "/queue?t=x"
        );
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused_without_echoing_it() {
        let server: comfy_proxy::ServerAddress = "127.0.0.1:8188".parse().unwrap();
        for auth in [
            Auth::Bearer("s3cret\r\nX-Injected: 1".into()),
            Auth::Bearer("s3crét".into()),
            Auth::Header {
                name: "X-Key".into(),
                value: "s3cret\n".into(),
            },
        ] {
            let e = crate::ClientConfig::new(server.clone())
                .with_auth(auth)
                .unwrap_err();
            assert!(matches!(e, ConfigError::InvalidHeaderValue { .. }), "{e:?}");
            assert!(!e.to_string().contains("s3cr"), "{e}");
            assert!(!format!("{e:?}").contains("s3cr"), "{e:?}");
        }
        let e = crate::ClientConfig::new(server)
            .with_header("X-Trace", "a\r\nb")
            .unwrap_err();
        assert!(e.to_string().contains("x-trace"), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_the_configs_and_requests_debug() {
        let server: comfy_proxy::ServerAddress = "127.0.0.1:8188".parse().unwrap();
        let base = crate::ClientConfig::new(server);
        let configs = [
            base.clone().with_auth(Auth::Bearer("s3cret-bearer".into())),
            base.clone().with_auth(Auth::Basic {
                user: "u".into(),
                password: "s3cret-pw".into(),
            }),
            base.clone().with_auth(Auth::Query {
                name: "token".into(),
                value: "s3cret-query".into(),
            }),
            base.clone().with_auth(Auth::Header {
                name: "X-Plain".into(),
                value: "s3cret-header".into(),
            }),
            base.clone().with_header("Cookie", "session=s3cret-cookie"),
            base.clone().with_header("X-Api-Key", "s3cret-key"),
            base.with_secret_header("X-Anything", "s3cret-flagged"),
        ];
        for config in configs {
            let config = config.unwrap();
            let shown = format!("{config:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            // Basic's secret also travels base64-encoded.
            assert!(!shown.contains("dTpzM2NyZXQtcHc"), "{shown}");
            let request = crate::client::outgoing(&config, comfy_proxy::wire::http::system_stats());
            let shown = format!("{request:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("dTpzM2NyZXQtcHc"), "{shown}");
            assert!(
                !request.shown_url.contains("s3cret"),
                "{}",
                request.shown_url
            );
            // What is sent still carries the secret.
            let sent = String::from_utf8_lossy(&crate::http1::encode_request(&request).unwrap())
                .into_owned();
            assert!(
                sent.contains("s3cret") || sent.contains("dTpzM2NyZXQtcHc"),
                "{sent}"
            );
            let redacted = config.redactor().redact(&sent).into_owned();
            assert!(!redacted.contains("s3cret"), "{redacted}");
            assert!(!redacted.contains("dTpzM2NyZXQtcHc"), "{redacted}");
        }
    }

    #[test]
    fn the_query_token_is_shown_redacted() {
        let auth = Auth::Query {
            name: "token".into(),
            value: "s3cret".into(),
        };
        assert_eq!(
            auth.shown_query("/ws?clientId=c"),
            "/ws?clientId=c&token=<redacted>"
        );
        assert_eq!(auth.apply_query("/queue"), "/queue?token=s3cret");
        assert_eq!(Auth::None.shown_query("/queue"), "/queue");
    }

    #[test]
    fn the_redactor_scrubs_every_form_and_leaves_short_secrets() {
        let r = Redactor::new(
            Auth::Query {
                name: "t".into(),
                value: "a b/c+d".into(),
            }
            .secrets(),
        );
        assert_eq!(r.redact("x a b/c+d y"), "x <redacted> y");
        assert_eq!(r.redact("?t=a%20b%2Fc%2Bd"), "?t=<redacted>");
        let short = Redactor::new(["abc"]);
        assert!(short.is_empty());
        assert_eq!(short.redact("abc"), "abc");
        // A secret that contains another is replaced whole.
        let nested = Redactor::new(["secret", "secret-and-more"]);
        assert_eq!(nested.redact("secret-and-more"), "<redacted>");
    }
}
