//! Test support for rlmkit-sandbox: the conformance suite every backend passes.
//!
//! Each case is a `pub async fn(&dyn Executor)` in [`conformance`]; a backend's
//! test file calls [`conformance_suite!`] with a function that gives its
//! executor, and gets one test per case.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod conformance;
pub mod sessions;

/// Expands to one `#[rstest]` test per conformance case, each running the case
/// against the executor `$make()` returns (`Option<Box<dyn Executor>>`; `None`
/// skips the case, after the maker has printed why).
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@cases $make;
            hello_world, exit_codes, stderr_is_separate, stdin_is_fed, env_is_given_and_host_env_is_not,
            input_files_are_placed, unicode_and_binary_output, timeout_keeps_partial_output,
            output_flood_is_capped, memory_hog_is_stopped, fork_bomb_is_contained,
            grandchild_is_killed_on_timeout, ten_executions_at_once, bad_limits_are_rejected,
            missing_command_is_an_error
        );
    };
    (@sessions $make:path; $($case:ident),* $(,)?) => {
        $(
            #[::rstest::rstest]
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(executor) = $make() else { return };
                $crate::sessions::$case(executor.as_ref()).await;
            }
        )*
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[::rstest::rstest]
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(executor) = $make() else { return };
                $crate::conformance::$case(executor.as_ref()).await;
            }
        )*
    };
}

/// Expands to one test per session case in [`sessions`], each against the
/// executor `$make()` returns (`None` skips, as for [`conformance_suite!`]).
#[macro_export]
macro_rules! session_suite {
    ($make:path) => {
        $crate::conformance_suite!(@sessions $make;
            state_is_kept_between_cells, an_exception_is_data_and_the_session_lives_on,
            a_timed_out_cell_is_interrupted_and_the_session_lives_on,
            a_cell_that_ignores_interruption_loses_the_session, cell_output_is_capped,
            files_move_in_and_out, the_lifetime_limit_ends_the_session, session_limits_hold
        );
    };
}
