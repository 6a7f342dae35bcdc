//! The Docker backend of rlmkit-sandbox (in progress: not usable yet).
