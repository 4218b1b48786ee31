//! comfy-proxy's test kit (not published): what the tests, the fuzz targets and the benches
//! share, one copy each.
//!
//! - [`session`]: the session harness that the property tests and the fuzz target drive.
//! - [`sim`]: the event heap of the simulations (the pool's and the chaos run).
//! - [`rng`]: the seeded generator (splitmix64) the simulations, the mutations and the mock's
//!   faults draw from (feature `suite`).
//! - [`suite`]: the integration suite, written once and run by each runtime crate against mock
//!   servers on loopback ([`integration_suite!`]) (feature `suite`).
//!
//! Without its default feature `suite` the kit depends on the core alone, for the fuzz
//! workspace.

pub mod session;
pub mod sim;

#[cfg(feature = "suite")]
pub mod suite;

#[cfg(feature = "suite")]
pub use suite::Kit;

/// The seeded generator: the mock crate's, so that its faults and the tests draw alike.
#[cfg(feature = "suite")]
pub mod rng {
    pub use comfy_proxy_mock::rng::{SplitMix64, mix};
}
