//! The `rlmkit-sandbox` command line, and the backend selector that tools
//! embedding rlmkit-sandbox can use too.

pub mod selector;
