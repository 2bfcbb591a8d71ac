//! Debug views of what pilotfish serves, in the shapes Envoy's own admin endpoints print.

pub mod json;
