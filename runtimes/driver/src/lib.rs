//! The async half of comfy-proxy, written once over `futures-io`.
//!
//! Everything here moves bytes for the sans-IO core (`comfy-proxy`): it opens the websocket
//! with async-tungstenite over any `AsyncRead + AsyncWrite` stream, sends HTTP through a small
//! [`HttpClient`] seam, sleeps and spawns through a [`Runtime`]. Every decision stays in the
//! core. The runtime crates (`comfy-proxy-smol`, `comfy-proxy-async-std`) implement
//! [`Runtime`] and [`HttpClient`] in a few hundred lines each.

mod actor;
mod alarm;
pub mod auth;
pub mod client;
mod drive;
#[cfg(test)]
mod fake;
pub mod headers;
pub mod http1;
mod ops;
pub mod pool;
mod record;
pub mod runtime;
#[cfg(test)]
mod timing_tests;
pub mod tls;
mod ws;

pub use auth::{Auth, CertificateProblem, ConfigError, Redactor};
pub use client::{Client, ClientConfig, ClientError, PromptStream, RunResult};
pub use headers::Headers;
pub use ops::UploadOptions;
pub use runtime::{BoxFuture, HttpClient, OutgoingRequest, Runtime, Stream};
pub use tls::TlsConfig;
