//! pilotfish: an Envoy xDS control plane that serves Istio's APIs.
//!
//! Data flows one way (see docs/architecture.md):
//! `source` → `store` → `index` → `generate` → `xds`, with `config` the typed objects,
//! `validate` the checks istiod's webhook makes, and `model` the shared domain values.

pub mod base64;
pub mod bootstrap;
pub mod ca;
pub mod config;
pub mod crd;
pub mod debug;
pub mod diagnostic;
pub mod generate;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod operator;
pub mod push;
pub mod rbac;
pub mod render;
pub mod security;
pub mod serve;
pub mod sorted;
pub mod source;
pub mod status;
pub mod store;
pub mod validate;
pub mod webhook;
pub mod xds;
