//! Node sources: each turns its world into the full desired set of nodes.

pub mod file;
