//! Rate limits (being written).
