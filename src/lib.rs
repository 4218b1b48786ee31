//! # comfy-proxy: a sans-IO client core for ComfyUI
//!
//! This crate decides everything a ComfyUI client has to decide, and does no IO: no sockets, no
//! async, no clock. Time and random ids come in as arguments; bytes to send come out as values.
//! The runtime adapters (`comfy-proxy-smol`, `comfy-proxy-async-std`) move those bytes.
//!
//! - [`address`]: server addresses (`host:8188-8192`, lists, schemes, IPv6).
//! - [`workflow`]: API-format graphs, the Flux and Qwen Image builders with any number of LoRAs.
//! - [`wire`]: the websocket messages, binary frames and HTTP requests, decoded without copying
//!   image bytes.
//! - [`session`]: the state machine of one websocket connection and the prompts it submitted.
//! - [`pool`]: the scheduler of a pool of servers: dispatch, balancing, circuit breakers,
//!   retries, exactly one end per job.
//! - [`transcript`] and [`replay`]: recorded sessions (`comfy-transcript/1`) driven through the
//!   same state machine.
//! - [`text`]: text from a server made safe to print on a terminal (no escape sequences or
//!   control characters).
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod address;
pub mod error;
pub mod ids;
pub mod pool;
pub mod wire;
pub mod workflow;

pub use address::{AddressError, ServerAddress};
pub use error::{ExchangeError, Misuse, ProtocolError, TransportError, TransportErrorKind};
pub use ids::{ClientId, NodeId, PromptId};
pub use workflow::{FluxParams, Link, Lora, ObjectInfo, QwenParams, Size, Workflow, WorkflowError};
pub mod replay;
pub mod session;
pub mod text;
pub mod transcript;

/// The README's examples, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
