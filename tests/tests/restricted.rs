//! The conformance suite, and restricted-only checks, on the restricted backend.

use sandbox_core::Executor;
use sandbox_restricted::RestrictedExecutor;

fn restricted() -> Option<Box<dyn Executor>> {
    Some(Box::new(RestrictedExecutor::new().expect("the restricted executor builds")))
}

sandbox_tests::conformance_suite!(restricted);
