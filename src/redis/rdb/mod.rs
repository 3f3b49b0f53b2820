//! The streaming RDB parser.
