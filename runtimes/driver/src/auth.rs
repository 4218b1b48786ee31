//! Authentication and extra headers, applied to HTTP and the websocket alike.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;

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
            Self::InvalidHeaderName { name } => write!(f, "invalid header name {name:?}"),
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
            Self::Bearer(_) => f.write_str("Auth::Bearer(***)"),
            Self::Basic { user, .. } => {
                write!(f, "Auth::Basic {{ user: {user:?}, password: *** }}")
            }
            Self::Header { name, .. } => write!(f, "Auth::Header {{ name: {name:?}, value: *** }}"),
            Self::Query { name, .. } => write!(f, "Auth::Query {{ name: {name:?}, value: *** }}"),
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
    /// The headers this auth adds.
    pub fn headers(&self) -> Vec<(String, String)> {
        match self {
            Self::None | Self::Query { .. } => Vec::new(),
            Self::Bearer(token) => vec![("Authorization".into(), format!("Bearer {token}"))],
            Self::Basic { user, password } => {
                let raw =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                vec![("Authorization".into(), format!("Basic {raw}"))]
            }
            Self::Header { name, value } => vec![(name.clone(), value.clone())],
        }
    }

    /// `path_and_query` with this auth's query parameter added, if it has one.
    pub fn apply_query(&self, path_and_query: &str) -> String {
        match self {
            Self::Query { name, value } => {
                let sep = if path_and_query.contains('?') {
                    '&'
                } else {
                    '?'
                };
                format!("{path_and_query}{sep}{}={}", encode(name), encode(value))
            }
            _ => path_and_query.to_owned(),
        }
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
            .headers()[0]
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
}
