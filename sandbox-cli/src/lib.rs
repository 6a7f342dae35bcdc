//! The `rlmkit-sandbox` command line, and the backend selector that tools
//! embedding rlmkit-sandbox can use too.

pub mod doctor;
pub mod selector;
pub mod serve;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
