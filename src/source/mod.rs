//! Sources of config: a directory of YAML, or the Kubernetes API. Each turns what it reads into
//! store entries; neither the store nor anything after it knows which source spoke.

pub mod directory;
pub mod jwks;
pub mod kubernetes;
pub mod watch;

pub use directory::Directory;
