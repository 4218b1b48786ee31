//! comfy-proxy's test kit (not published): what the tests, the fuzz targets and the benches
//! share, one copy each.
//!
//! - [`suite`]: the integration suite, written once and run by each runtime crate against mock
//!   servers on loopback ([`integration_suite!`]).

pub mod suite;

pub use suite::Kit;
