//! Test support for rlmkit-sandbox: the conformance suite every backend passes.
//!
//! Each case is a `pub async fn(&dyn Executor)` in [`conformance`]; a backend's
//! test file calls [`conformance_suite!`] with a function that gives its
//! executor, and gets one test per case.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod adversarial;
pub mod conformance;
pub mod docker_support;
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

/// Expands to one test per case of the adversarial battery in [`adversarial`],
/// each against a fresh [`adversarial::Sandbox`] from `$make(case_name).await`
/// (an `async fn(&'static str) -> Option<Sandbox>`; `None` skips, after the
/// maker has printed why). After the case, the sandbox checks that the
/// executor still works and that nothing was left behind.
///
/// `adversarial_suite!(make)` runs every case. To mark a case that finds a
/// defect in one backend, list every case with the reason after the bad one:
/// `adversarial_suite!(make; fork_bomb, ..., vsock_sockets = "defect: ...", ...)`;
/// a test then checks that the list names every case of the battery.
#[macro_export]
macro_rules! adversarial_suite {
    ($make:path) => {
        $crate::adversarial_suite!($make;
            fork_bomb, memory_bomb_one_allocation, memory_bomb_slow_growth,
            disk_fill_of_the_scratch_space, output_flood_on_both_streams, a_million_tiny_lines,
            a_100_mb_line_without_newline, binary_garbage_on_both_streams, closing_stdout_early,
            sleep_forever, busy_loop, child_ignoring_sigterm, double_forked_setsid_grandchild,
            signals_to_the_parent_and_everyone, host_secrets_are_out_of_reach,
            tcp_to_host_listeners, udp_to_a_host_socket, dns_resolution, raw_sockets,
            netlink_sockets, vsock_sockets, proc_and_sys_snooping, symlink_and_hardlink_tricks,
            writing_to_the_code, ten_mb_of_code, fifty_mb_of_stdin,
            nul_byte_in_source, nul_bytes_in_requests, invalid_utf8_source
        );
    };
    ($make:path; $($case:ident $(= $defect:literal)?),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $defect])?
            async fn $case() {
                let Some(sandbox) = $make(stringify!($case)).await else { return };
                $crate::adversarial::$case(sandbox.executor()).await;
                sandbox.finish().await;
            }
        )*

        #[test]
        fn every_adversarial_case_is_listed() {
            assert_eq!(&[$(stringify!($case)),*][..], $crate::adversarial::CASES);
        }
    };
}
