//! Authentication and authorization (being written).
