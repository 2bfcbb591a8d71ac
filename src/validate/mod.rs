//! Checks istiod's validating webhook makes, per kind.
