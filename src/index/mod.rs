//! The index of services, endpoints and policies, built from a store snapshot.
