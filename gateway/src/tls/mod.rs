//! TLS: node CA and leaf certificates (being written).
