//! The built-in demo: procedurally drawn domain images with captions and tasks.

pub mod domains;
