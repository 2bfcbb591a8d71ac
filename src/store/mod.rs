//! One store of typed objects with a revision.
