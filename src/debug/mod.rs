//! Debug views of what pilotfish serves, in the shapes Envoy's own admin endpoints print, and
//! istiod's HTTP debug endpoints that serve them.

pub mod http;
pub mod json;
