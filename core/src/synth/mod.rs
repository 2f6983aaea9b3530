//! Synthesis: turning a visual-instruction synthesizer's output into task triplets and
//! training tasks (the paper's first contribution). The generation and filtering commands
//! build on these pieces.
//!
//! - [`triplets`]: turns, hinted question–answer pairs, the triplet of each image, and the
//!   answer-indicator rule that picks a training target's form.

pub mod triplets;
