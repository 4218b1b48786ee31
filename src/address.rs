//! Server addresses. (Being written.)
/// A parsed server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress;
/// A bad address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError;
