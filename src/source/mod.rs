//! Sources of config: a directory of YAML (later, the Kubernetes API).
