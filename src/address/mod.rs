//! Server addresses: one ComfyUI server, or many written the way people write them.
//!
//! [`ServerAddress::parse`] reads exactly one server; [`parse_addresses`] reads a comma list
//! whose items may be port ranges, and [`parse_address_list`] does the same for a list of such
//! strings (one per command-line flag or config entry).
//!
//! # Accepted forms
//!
//! | item | means |
//! | --- | --- |
//! | `127.0.0.1:8188` | plain HTTP, port 8188 |
//! | `gpu-box` | plain HTTP, port 8188 (the default, see below) |
//! | `host:8188-8190` | three servers, ports 8188, 8189 and 8190 (inclusive, at most 1024) |
//! | `[::1]:8188`, `[::1]:8188-8190`, `[::1]` | IPv6, always in brackets |
//! | `https://farm.example.com/comfy` | TLS, port 443, base path `/comfy` |
//! | `http://host:8080/comfyui/` | plain, port 8080, base path `/comfyui` |
//! | `" a:1 , b:2 "` | two servers; spaces around items are ignored |
//!
//! The scheme is optional and case-insensitive: `http` and `ws` mean plain, `https` and `wss`
//! mean TLS. ComfyUI serves HTTP and its websocket on one port, so `ws://h:1` and `http://h:1`
//! are the same server; [`ServerAddress::http_url`] and [`ServerAddress::ws_url`] pick the
//! scheme per request.
//!
//! A base path (for a server behind a reverse proxy) needs a scheme, so that `host/x` is not
//! mistaken for a host name. It is normalised: a leading `/`, no trailing `/`, repeated `/`
//! collapsed, and `""` when there is none. It cannot carry a query or fragment.
//!
//! Host names are ASCII letters, digits, `-`, `.` and `_` (write internationalised names in
//! their `xn--` form) and are stored lower-cased; IPv6 addresses are stored in their canonical
//! form (RFC 5952, so `[0:0::1]` becomes `::1`).
//!
//! # Default port
//!
//! An item without a port gets **8188** (ComfyUI's own default) when it has no scheme either,
//! and the scheme's well-known port when a scheme is written: **80** for `http`/`ws`, **443** for
//! `https`/`wss`. So `gpu-box` is `gpu-box:8188` but `https://farm.example.com` is port 443.
//! The canonical form ([`fmt::Display`]) always writes the port, so it parses back unchanged.
//!
//! # Duplicates
//!
//! After ranges are expanded, two addresses are duplicates when they have the same TLS setting
//! (plain or TLS), host (case-insensitively; IPv6 compared in canonical form), port and base
//! path. Duplicates are removed, keeping the first occurrence; the order is otherwise that of
//! the input. `"a:1-3, A:2"` is `a:1, a:2, a:3`.
//!
//! # Errors
//!
//! Any bad item fails the whole parse with an [`AddressError`] that quotes the offending item
//! and part. User info (`user:pw@host`) is rejected, and redacted in the error: credentials go
//! in request headers, not in addresses. The parsers never panic, whatever the input.

use core::net::Ipv6Addr; // a value type for parsing addresses: no socket
use std::collections::HashSet;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The port of an address that names neither a scheme nor a port: ComfyUI's default.
pub const DEFAULT_PORT: u16 = 8188;

/// The most servers one port range (`host:8188-9211`) may expand to.
pub const MAX_RANGE_PORTS: u32 = 1024;

/// One ComfyUI server: host, port, plain or TLS, and a base path.
///
/// Equality and hashing follow the duplicate rule of the [module docs](self): the host is
/// stored lower-cased (IPv6 in canonical form), so equal values are the same server.
///
/// ```
/// use comfy_proxy::ServerAddress;
/// let a: ServerAddress = "https://[::1]/comfy/".parse().unwrap();
/// assert_eq!(a.port(), 443);
/// assert_eq!(a.ws_url("/ws?clientId=x"), "wss://[::1]:443/comfy/ws?clientId=x");
/// assert_eq!(a.to_string(), "https://[::1]:443/comfy");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddress {
    /// Lower-cased host name, or an IPv6 address without brackets.
    host: String,
    port: u16,
    tls: bool,
    /// `""` or `/a/b`: leading slash, no trailing slash.
    base_path: String,
}

impl ServerAddress {
    /// Parses exactly one server. A comma list, or a range of more than one port, is
    /// [`AddressError::NotSingle`]; use [`parse_addresses`] for those.
    pub fn parse(one: &str) -> Result<ServerAddress, AddressError> {
        let item = one.trim();
        if item.is_empty() {
            return Err(AddressError::Empty);
        }
        let parsed = if item.contains(',') {
            None
        } else {
            Some(parse_item(item)?)
        };
        match parsed {
            Some((one, ports)) if ports.start() == ports.end() => Ok(one),
            _ => Err(AddressError::NotSingle { item: redact(item) }),
        }
    }

    /// The host name or IP address, without brackets (`::1`, `gpu-box`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether to connect with TLS (`https`/`wss`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The base path the server is mounted under: `""` or `"/comfy"` (never a trailing `/`).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The HTTP(S) URL of an endpoint: `http_url("/prompt")` is `"https://[::1]:8188/comfy/prompt"`
    /// for a server at `https://[::1]:8188/comfy`. A `/` is put in front of `path_and_query` when
    /// it has none; it is otherwise copied as given.
    pub fn http_url(&self, path_and_query: &str) -> String {
        self.url(if self.tls { "https" } else { "http" }, path_and_query)
    }

    /// The websocket URL of an endpoint: `ws_url("/ws?clientId=x")` is
    /// `"wss://host:443/comfy/ws?clientId=x"` for a TLS server. Same joining as [`Self::http_url`].
    pub fn ws_url(&self, path_and_query: &str) -> String {
        self.url(if self.tls { "wss" } else { "ws" }, path_and_query)
    }

    /// `host:port`, with brackets around an IPv6 host: what to connect to and what to send in
    /// the `Host` header. The port is always written.
    pub fn authority(&self) -> String {
        let mut out = String::with_capacity(self.host.len() + 8);
        self.write_authority(&mut out);
        out
    }

    fn write_authority(&self, out: &mut String) {
        use std::fmt::Write;
        if self.is_ipv6() {
            out.push('[');
            out.push_str(&self.host);
            out.push(']');
        } else {
            out.push_str(&self.host);
        }
        // Writing to a `String` cannot fail.
        let _ = write!(out, ":{}", self.port);
    }

    /// Whether the host is an IPv6 address.
    pub fn is_ipv6(&self) -> bool {
        self.host.contains(':')
    }

    fn url(&self, scheme: &str, path_and_query: &str) -> String {
        // One string, written in place: this runs for every request.
        let mut out = String::with_capacity(
            scheme.len() + self.host.len() + self.base_path.len() + path_and_query.len() + 16,
        );
        out.push_str(scheme);
        out.push_str("://");
        self.write_authority(&mut out);
        out.push_str(&self.base_path);
        if !path_and_query.starts_with('/') {
            out.push('/');
        }
        out.push_str(path_and_query);
        out
    }
}

/// The canonical form, which parses back to the same value: `http://127.0.0.1:8188`,
/// `https://[::1]:443/comfy`. The port is always written.
impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.base_path)
    }
}

impl FromStr for ServerAddress {
    type Err = AddressError;

    /// Same as [`ServerAddress::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Serialised as its canonical string.
impl Serialize for ServerAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserialised from a string with [`ServerAddress::parse`].
impl<'de> Deserialize<'de> for ServerAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a comma list of servers, expanding port ranges and dropping duplicates (see the
/// [module docs](self) for the forms and the rules). Blank input is [`AddressError::Empty`].
///
/// ```
/// use comfy_proxy::address::parse_addresses;
/// let servers = parse_addresses(" gpu1:8188-8189, https://farm.example.com/comfy/ ,gpu1").unwrap();
/// let urls: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
/// assert_eq!(
///     urls,
///     [
///         "http://gpu1:8188",
///         "http://gpu1:8189",
///         "https://farm.example.com:443/comfy",
///     ]
/// );
/// assert!(parse_addresses("gpu1:8188,,gpu2:8188").is_err());
/// ```
pub fn parse_addresses(spec: &str) -> Result<Vec<ServerAddress>, AddressError> {
    if spec.trim().is_empty() {
        return Err(AddressError::Empty);
    }
    let mut list = Expanded::default();
    list.add(spec)?;
    Ok(list.out)
}

/// Parses several specs (each one as [`parse_addresses`] reads it) into one list, dropping
/// duplicates across all of them. An empty slice is [`AddressError::Empty`]; a blank element is
/// [`AddressError::EmptyItem`].
pub fn parse_address_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<ServerAddress>, AddressError> {
    if items.is_empty() {
        return Err(AddressError::Empty);
    }
    let mut list = Expanded::default();
    for spec in items {
        list.add(spec.as_ref())?;
    }
    Ok(list.out)
}

/// The addresses parsed so far, in order, and the set that keeps them unique.
#[derive(Default)]
struct Expanded {
    out: Vec<ServerAddress>,
    seen: HashSet<ServerAddress>,
}

impl Expanded {
    fn add(&mut self, spec: &str) -> Result<(), AddressError> {
        for (i, raw) in spec.split(',').enumerate() {
            let item = raw.trim();
            if item.is_empty() {
                return Err(AddressError::EmptyItem {
                    spec: redact(spec),
                    position: i + 1,
                });
            }
            let (first, ports) = parse_item(item)?;
            for port in ports {
                let addr = ServerAddress {
                    port,
                    ..first.clone()
                };
                if self.seen.insert(addr.clone()) {
                    self.out.push(addr);
                }
            }
        }
        Ok(())
    }
}

/// Parses one trimmed, non-empty item without commas into the address at the first port of its
/// range, and the range.
fn parse_item(item: &str) -> Result<(ServerAddress, RangeInclusive<u16>), AddressError> {
    if item.contains('@') {
        return Err(AddressError::UserInfo { item: redact(item) });
    }
    let (scheme, rest) = match item.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, item),
    };
    let tls = match scheme.map(str::to_ascii_lowercase).as_deref() {
        None | Some("http" | "ws") => false,
        Some("https" | "wss") => true,
        Some(_) => {
            return Err(AddressError::UnknownScheme {
                item: own(item),
                scheme: own(scheme.unwrap_or_default()),
            });
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if scheme.is_none() && !path.is_empty() {
        return Err(AddressError::PathWithoutScheme { item: own(item) });
    }
    let (host, port_spec) = split_authority(item, authority)?;
    let ports = match port_spec {
        Some(spec) => parse_ports(item, spec)?,
        None => {
            let port = match (scheme, tls) {
                (None, _) => DEFAULT_PORT,
                (Some(_), false) => 80,
                (Some(_), true) => 443,
            };
            port..=port
        }
    };
    let base_path = normalise_path(item, path)?;
    let port = *ports.start();
    Ok((
        ServerAddress {
            host,
            port,
            tls,
            base_path,
        },
        ports,
    ))
}

/// Shorthand for the owned copies errors keep.
fn own(text: &str) -> String {
    text.to_owned()
}

/// Each comma item of `text` with everything between its scheme (if any) and its last `@`
/// replaced by `***`, so that errors never quote a password.
fn redact(text: &str) -> String {
    let items = text.split(',').map(|item| match item.rfind('@') {
        Some(at) => {
            let keep = item.find("://").filter(|&i| i < at).map_or(0, |i| i + 3);
            format!("{}***{}", &item[..keep], &item[at..])
        }
        None => own(item),
    });
    items.collect::<Vec<_>>().join(",")
}

/// Splits `host[:ports]` or `[v6][:ports]` into a normalised host and the port text.
fn split_authority<'a>(
    item: &str,
    authority: &'a str,
) -> Result<(String, Option<&'a str>), AddressError> {
    let bad_bracket = || AddressError::BadBracket { item: own(item) };
    if let Some(inner) = authority.strip_prefix('[') {
        let (v6, after) = inner.split_once(']').ok_or_else(bad_bracket)?;
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':').ok_or_else(bad_bracket)?)
        };
        if v6.is_empty() {
            return Err(AddressError::EmptyHost { item: own(item) });
        }
        let ip: Ipv6Addr = v6.parse().map_err(|_| AddressError::InvalidIpv6 {
            item: own(item),
            host: own(v6),
        })?;
        return Ok((ip.to_string(), port));
    }
    if authority.contains(['[', ']']) {
        return Err(bad_bracket());
    }
    let (host, port) = match authority.split_once(':') {
        Some((_, port)) if port.contains(':') => {
            return Err(AddressError::UnbracketedIpv6 { item: own(item) });
        }
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(AddressError::EmptyHost { item: own(item) });
    }
    if let Some(ch) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(AddressError::InvalidHost {
            item: own(item),
            host: own(host),
            ch,
        });
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// Parses `8188` or `8188-8192` (inclusive).
fn parse_ports(item: &str, spec: &str) -> Result<RangeInclusive<u16>, AddressError> {
    let (first, last) = match spec.split_once('-') {
        Some((first, last)) => (first, last),
        None => (spec, spec),
    };
    let start = parse_port(item, spec, first)?;
    let end = parse_port(item, spec, last)?;
    if start > end {
        return Err(AddressError::ReversedRange {
            item: own(item),
            range: own(spec),
        });
    }
    let count = u32::from(end) - u32::from(start) + 1;
    if count > MAX_RANGE_PORTS {
        return Err(AddressError::RangeTooLarge {
            item: own(item),
            range: own(spec),
            count,
        });
    }
    Ok(start..=end)
}

/// Parses one port number, quoting the whole port text (`spec`) in errors.
fn parse_port(item: &str, spec: &str, digits: &str) -> Result<u16, AddressError> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError::PortNotNumeric {
            item: own(item),
            port: own(spec),
        });
    }
    // Only digits by now, so the parse fails only when the number is too large.
    match digits.parse::<u16>() {
        Ok(0) => Err(AddressError::ZeroPort {
            item: own(item),
            port: own(spec),
        }),
        Ok(n) => Ok(n),
        Err(_) => Err(AddressError::PortTooLarge {
            item: own(item),
            port: own(spec),
        }),
    }
}

/// Characters a base path may hold: RFC 3986 `pchar` and `/`, minus `@` (rejected as user info).
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+;=:%/".contains(c)
}

/// `""`, or the path with a leading `/`, no trailing `/` and no empty segments.
fn normalise_path(item: &str, path: &str) -> Result<String, AddressError> {
    if let Some(ch) = path.chars().find(|&c| !is_path_char(c)) {
        return Err(AddressError::InvalidPath {
            item: own(item),
            path: own(path),
            ch,
        });
    }
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    Ok(out)
}

/// A server address that cannot be parsed. The message quotes the offending item and part
/// (user info excepted, which is redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    /// The input was empty or blank: no server was given.
    Empty,
    /// An item of a comma list was blank (`"a:1,,b:2"`, or a trailing comma).
    EmptyItem {
        /// The whole comma list (user info redacted).
        spec: String,
        /// Which item, counting from 1.
        position: usize,
    },
    /// [`ServerAddress::parse`] was given a list or a range of several ports.
    NotSingle {
        /// The item (user info redacted).
        item: String,
    },
    /// No host before the port or path (`":8188"`, `"http://"`, `"[]"`).
    EmptyHost {
        /// The item.
        item: String,
    },
    /// A scheme other than `http`, `https`, `ws` or `wss`.
    UnknownScheme {
        /// The item.
        item: String,
        /// The scheme as written.
        scheme: String,
    },
    /// The port (or an end of the range) is 0.
    ZeroPort {
        /// The item.
        item: String,
        /// The port or range as written.
        port: String,
    },
    /// The port (or an end of the range) is over 65535.
    PortTooLarge {
        /// The item.
        item: String,
        /// The port or range as written.
        port: String,
    },
    /// The port is missing after `:` or is not a decimal number or `first-last` range.
    PortNotNumeric {
        /// The item.
        item: String,
        /// The port or range as written.
        port: String,
    },
    /// A range whose first port is above its last (`8192-8188`).
    ReversedRange {
        /// The item.
        item: String,
        /// The range as written.
        range: String,
    },
    /// A range of more than [`MAX_RANGE_PORTS`] ports.
    RangeTooLarge {
        /// The item.
        item: String,
        /// The range as written.
        range: String,
        /// How many ports it spans.
        count: u32,
    },
    /// The host holds a character a host name cannot (whitespace, `%`, non-ASCII...).
    InvalidHost {
        /// The item.
        item: String,
        /// The host as written.
        host: String,
        /// The first offending character.
        ch: char,
    },
    /// A `/` without a scheme (`"host:8188/comfy"`): a base path needs `http://` or `https://`.
    PathWithoutScheme {
        /// The item.
        item: String,
    },
    /// User info (`user:pw@host`). Credentials belong in request headers.
    UserInfo {
        /// The item, with the user info replaced by `***`.
        item: String,
    },
    /// More than one `:` outside brackets, as in a bare IPv6 address (`::1`).
    UnbracketedIpv6 {
        /// The item.
        item: String,
    },
    /// The text in brackets is not an IPv6 address.
    InvalidIpv6 {
        /// The item.
        item: String,
        /// The text between the brackets.
        host: String,
    },
    /// An unmatched `[` or `]`, or text after `]` other than `:port`.
    BadBracket {
        /// The item.
        item: String,
    },
    /// The base path holds a character it cannot (whitespace, `?`, `#`, non-ASCII...).
    InvalidPath {
        /// The item.
        item: String,
        /// The path as written.
        path: String,
        /// The first offending character.
        ch: char,
    },
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no server address given"),
            Self::EmptyItem { spec, position } => {
                write!(f, "item {position} of {spec:?} is empty")
            }
            Self::NotSingle { item } => write!(
                f,
                "{item:?} names more than one server; parse it with parse_addresses"
            ),
            Self::EmptyHost { item } => write!(f, "{item:?} has no host"),
            Self::UnknownScheme { item, scheme } => write!(
                f,
                "unknown scheme {scheme:?} in {item:?}; use http, https, ws or wss"
            ),
            Self::ZeroPort { item, port } => {
                write!(f, "port {port:?} in {item:?}: port 0 cannot be used")
            }
            Self::PortTooLarge { item, port } => {
                write!(f, "port {port:?} in {item:?} is over 65535")
            }
            Self::PortNotNumeric { item, port } if port.is_empty() => {
                write!(f, "port {port:?} in {item:?} is missing after ':'")
            }
            Self::PortNotNumeric { item, port } => write!(
                f,
                "port {port:?} in {item:?} is not a number or a first-last range"
            ),
            Self::ReversedRange { item, range } => write!(
                f,
                "port range {range:?} in {item:?} is reversed; write the lower port first"
            ),
            Self::RangeTooLarge { item, range, count } => write!(
                f,
                "port range {range:?} in {item:?} spans {count} ports; at most {MAX_RANGE_PORTS} are allowed"
            ),
            Self::InvalidHost { item, host, ch } => write!(
                f,
                "host {host:?} in {item:?} has the character {ch:?}, which a host name cannot hold"
            ),
            Self::PathWithoutScheme { item } => write!(
                f,
                "{item:?} has a path but no scheme; write it as \"http://{item}\" or \"https://{item}\""
            ),
            Self::UserInfo { item } => write!(
                f,
                "{item:?} has user info before '@'; credentials do not go in an address, send them in request headers"
            ),
            Self::UnbracketedIpv6 { item } => write!(
                f,
                "{item:?} has more than one ':'; write an IPv6 address in brackets, as in \"[::1]:8188\""
            ),
            Self::InvalidIpv6 { item, host } => {
                write!(f, "{host:?} in {item:?} is not an IPv6 address")
            }
            Self::BadBracket { item } => write!(
                f,
                "{item:?} has an unmatched '[' or ']', or text after ']' other than \":port\""
            ),
            Self::InvalidPath { item, path, ch } if matches!(ch, '?' | '#') => write!(
                f,
                "base path {path:?} in {item:?} has {ch:?}; a base path cannot carry a query or fragment"
            ),
            Self::InvalidPath { item, path, ch } => write!(
                f,
                "base path {path:?} in {item:?} has the character {ch:?}; percent-encode it"
            ),
        }
    }
}

impl std::error::Error for AddressError {}

#[cfg(test)]
mod tests;
