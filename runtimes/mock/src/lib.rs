//! A mock ComfyUI server, for comfy-proxy's tests, benchmarks and demos without a GPU.
//!
//! - [`server`]: the sans-IO logic of one server ([`MockServer`]): it answers the HTTP API,
//!   speaks on the websockets, replays recorded sessions or simulates any graph, and misbehaves
//!   on request ([`Faults`]). No sockets and no clock; its tests run in simulated time.
//! - [`serve`], [`serve_tls`], [`serve_with_renderer`]: the same server on a loopback socket,
//!   with HTTP/1.1, the websocket and TLS, on any runtime that implements the driver's
//!   [`Runtime`](comfy_proxy_driver::Runtime) (smol, async-std).
//! - [`render`]: the pictures it sends (PNG outputs, JPEG previews), drawn from the seed.

pub mod render;
pub mod server;

mod net;

pub use net::{MockHandle, serve, serve_tls, serve_with_renderer};
pub use server::{
    ConnId, Fault, Faults, FaultsError, Frame, ImageSpec, MAX_UPLOAD_SIZE, MockConfig, MockOutput,
    MockResponse, MockServer, Renderer,
};
