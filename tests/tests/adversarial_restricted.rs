//! The adversarial battery on the restricted backend.
//!
//! Each case gets an executor whose working directories go to a temporary
//! directory of its own and whose programs run as uids of a range of its own,
//! so that afterwards "nothing left behind" means exactly: that directory is
//! empty and no process of that range lives.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on failure.

use sandbox_restricted::RestrictedExecutor;
use sandbox_tests::adversarial::{self, Sandbox};

async fn restricted(case: &'static str) -> Option<Sandbox> {
    let temp = tempfile::Builder::new()
        .prefix(&format!("rlmkit-adversarial-{case}-"))
        .tempdir()
        .unwrap();
    let (first, count) = adversarial::private_uid_range();
    let executor = RestrictedExecutor::builder()
        .temp_dir(temp.path())
        .sandbox_uids(first, count)
        .build()
        .expect("the restricted executor builds");
    let dir = temp.path().to_owned();
    let leftovers = move || -> adversarial::Leftovers {
        let dir = dir.clone();
        Box::pin(async move {
            let mut left = adversarial::entries_in(&dir);
            left.extend(adversarial::processes_of_uids(first..first + count));
            left
        })
    };
    Some(Sandbox::new(Box::new(executor), leftovers).keep(temp))
}

sandbox_tests::adversarial_suite!(restricted);
