//! SKELETON: configuration.
