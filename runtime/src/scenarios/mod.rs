//! The scenario suite: end-to-end behaviour of the transports, the process layer and the server
//! over real loopback sockets, pipes, PTYs and child processes, written once against
//! [`Runtime`] and run by every runtime crate.
//!
//! Each scenario is an `async fn(Arc<dyn Runtime>)` that panics on failure. Every await in it
//! is bounded by [`TIMEOUT`] (through [`within`] or [`timeout`]); none sleeps where an event can
//! be awaited.
//!
//! A runtime crate runs the whole suite with [`scenario_tests!`](crate::scenario_tests), which
//! expands to one `#[test]` per scenario, given a function that runs a scenario to completion
//! on that runtime:
//!
//! ```ignore
//! // runtime-smol/tests/scenarios.rs
//! fn run<F: std::future::Future<Output = ()>>(scenario: impl FnOnce(Arc<dyn Runtime>) -> F) {
//!     smol::block_on(scenario(Arc::new(SmolRuntime)))
//! }
//! execd_runtime::scenario_tests!(run);
//! ```
//!
//! Adding a scenario: write it as a `pub async fn` in the module it belongs to and add its name
//! to that module's list in [`scenario_tests!`](crate::scenario_tests); both runtimes then run it.
//! Client scenarios (the async client over real servers, recovery through a [`CuttingProxy`])
//! are in [`client`].
//!
//! One scenario is not in the macro: [`client::default_runtime_constructors_serve_and_connect`]
//! exercises the constructors that find their runtime by type, so it is generic over a
//! [`DefaultRuntime`](crate::DefaultRuntime) and builds that runtime itself; each runtime crate
//! calls it from one `#[test]`.

pub mod binary;
pub mod client;
pub mod containment;
pub mod fs;
pub mod fs_watch;
pub mod hostile;
pub mod http;
pub mod lossless;
pub mod process;
mod proxy;
pub mod sandbox;
pub mod security;
pub mod server;
pub mod spawn;
pub mod transport;

pub use proxy::CuttingProxy;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::Runtime;

/// How long any single await in a scenario may take before the scenario fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the scenario (naming `what`) after [`TIMEOUT`].
///
/// # Panics
/// When `fut` takes longer than [`TIMEOUT`].
pub async fn timeout<T>(rt: &Arc<dyn Runtime>, what: &str, fut: impl Future<Output = T>) -> T {
    let expired = async {
        rt.sleep_until(rt.now() + TIMEOUT).await;
        None
    };
    match futures_lite::future::or(async { Some(fut.await) }, expired).await {
        Some(out) => out,
        None => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// Awaits `fut`, failing the scenario after [`TIMEOUT`].
///
/// # Panics
/// When `fut` takes longer than [`TIMEOUT`].
pub async fn within<T>(rt: &Arc<dyn Runtime>, fut: impl Future<Output = T>) -> T {
    timeout(rt, "a future", fut).await
}

/// Waits `duration` on `rt`'s timer, for scenarios that must let time pass (a TTL, a child
/// finishing while no client is attached).
pub async fn sleep(rt: &Arc<dyn Runtime>, duration: Duration) {
    rt.sleep_until(rt.now() + duration).await;
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(std::path::PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("execd-scenario-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        // Canonical: the sandbox scenarios compare it with paths the kernel resolved.
        TempDir(dir.canonicalize().expect("canonical temp dir"))
    }

    /// `name` inside the directory.
    pub(crate) fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Connects to `addr` over `rt` (a raw TCP stream, for speaking HTTP by hand).
///
/// # Errors
/// The connect error.
pub async fn tcp_connect(
    rt: &Arc<dyn Runtime>,
    addr: std::net::SocketAddr,
) -> std::io::Result<Box<dyn crate::runtime::AsyncStream>> {
    rt.tcp_connect(addr.ip().to_string(), addr.port()).await
}

/// Expands to one `#[test]` per scenario of the suite, each calling `$run(scenario)`.
///
/// `$run` names a function in the invoking module of the shape
/// `fn run<F: Future<Output = ()>>(scenario: impl FnOnce(Arc<dyn Runtime>) -> F)` that builds
/// the runtime, runs the scenario to completion and panics if it does. The tests are grouped in
/// modules named after the scenario modules (`process::…`, `server::…`, `transport::…`).
#[macro_export]
macro_rules! scenario_tests {
    ($run:ident) => {
        $crate::scenario_tests!(@modules $run;
            process {
                output_eof_and_exit_code_arrive_in_order,
                paused_output_stays_in_the_pipe_until_resumed,
                death_by_signal_is_reported_as_signal,
                environment_is_exactly_the_given_one,
                program_is_looked_up_in_the_child_path,
                arg0_overrides_what_the_child_sees,
                cwd_is_set,
                spawn_failures_report_the_os_error_and_nothing_else,
                piped_stdin_is_echoed_exactly_and_closes,
                stdin_is_dev_null_without_pipe_stdin,
                write_after_child_closed_stdin_reports_stdin_closed_once,
                tty_child_sees_a_terminal,
                tty_is_the_controlling_terminal_of_a_new_session,
                tty_starts_at_24_by_80_and_resizes,
                tty_input_reaches_the_child,
                kill_reaches_grandchildren_in_the_group,
                kill_reaches_grandchildren_on_a_tty,
                signal_is_delivered_to_the_group,
                large_output_arrives_complete,
                operations_on_unknown_or_released_keys_are_ignored,
                sandbox_requests_fail_rather_than_run_unsandboxed,
            }
            spawn {
                both_paths_set_group_env_cwd_and_signals,
                both_paths_give_a_pty_child_its_controlling_terminal,
                start_failures_keep_their_kind,
                concurrent_starts_all_run_and_close,
                kill_before_the_spawn_answer_is_carried_out,
                a_released_child_dies_with_its_table,
            }
            server {
                lifecycle_events_arrive_in_seq_order,
                eight_mib_of_output_arrives_in_order_without_loss,
                large_binary_output_is_exact,
                write_dedupe_reaches_the_child_once,
                writes_pipelined_behind_the_start_reach_the_child_in_order,
                stdin_is_null_without_pipe_stdin,
                resume_after_disconnect_keeps_output_produced_while_detached,
                resume_while_attached_is_refused_with_32010,
                ttl_expiry_kills_the_detached_sessions_processes,
                terminate_kills_the_process_group,
                pty_processes_see_a_terminal,
                malformed_frames_get_errors_and_the_connection_keeps_working,
                oversized_frames_are_refused_and_the_connection_keeps_working,
                origin_header_is_refused_and_readyz_answers,
                interrupt_reaches_children_even_when_the_server_ignores_sigint,
                a_client_that_stops_reading_pauses_the_child_instead_of_growing_memory,
                stdio_connection_serves_a_session_over_pipes,
            }
            transport {
                text_and_binary_frames_are_echoed_as_text,
                readyz_answers_200_ok_and_closes,
                handshake_with_origin_is_refused_with_403,
                tungstenite_client_with_origin_gets_http_403,
                plain_requests_get_404_or_400_and_listener_keeps_serving,
                slow_client_does_not_block_accept,
                oversize_frame_is_reported_and_next_frame_still_arrives,
                frame_above_hard_limit_ends_only_that_connection,
                ten_thousand_small_frames_arrive_in_order_both_ways,
                ws_connect_round_trip_and_close_ends_both_readers,
                server_close_ends_client_reader,
                idle_connection_is_pinged_and_pings_are_answered,
                stdio_frames_split_lines_strip_crlf_and_skip_oversize,
                stdio_writer_terminates_frames_with_newlines_and_refuses_embedded_ones,
                stdio_round_trip_through_a_child_process,
                halves_move_into_tasks,
            }
            hostile {
                a_huge_frame_header_costs_no_memory_and_a_bystander_keeps_its_echo,
                invalid_utf8_in_a_text_frame_closes_with_1007,
                a_peer_that_never_answers_pings_is_dropped_after_the_pong_timeout,
                a_client_that_never_reads_does_not_stall_a_bystander,
            }
            fs {
                environment_info_and_status_describe_the_host,
                env_policy_children_see_set_vars_and_inherit_path,
                files_round_trip_byte_exact_whole_and_in_blocks,
                handles_are_bounded_at_128_per_connection,
                watch_missing_fires_when_the_path_appears,
                watch_missing_fires_for_parents_present_and_shared_directories,
                bad_fs_inputs_leave_the_connection_working,
                local_and_remote_executors_agree_on_files,
                the_client_reads_files_and_blocks_byte_exact,
            }
            fs_watch {
                a_file_created_after_the_watch_is_reported_recursively_or_not,
                unwatch_stops_notifications_and_the_limit_is_named,
                executors_stream_watch_changes,
            }
            client {
                a_process_streams_its_events_in_order_with_its_exit_code,
                writes_reach_stdin_in_order_and_close_stdin_ends_it,
                a_server_error_is_typed_and_the_client_keeps_working,
                output_survives_connection_cuts_mid_stream_exactly_once,
                stdin_written_across_connection_cuts_reaches_the_child_once,
                calls_fail_closed_at_once_when_the_server_dies_without_recovery,
                recovery_gives_up_with_closed_errors_when_the_server_stays_dead,
                local_and_remote_executors_give_the_same_results,
                dropping_a_local_executor_kills_its_processes,
                a_unix_socket_server_is_private_serves_sessions_and_removes_its_file,
            }
            http {
                buffered_get_and_post_reach_the_peer,
                streamed_64_mib_body_arrives_in_order_in_deltas_of_at_most_1_mib,
                duplicate_active_stream_id_is_32602,
                cancel_ends_the_body_and_the_upstream_connection,
                disconnect_cancels_the_upstream_request,
                bad_inputs_are_32602_and_the_connection_keeps_working,
                an_unread_streamed_body_stops_the_download,
            }
            binary {
                binary_client_gets_every_byte_and_a_json_client_beside_it_gets_json,
                binary_writes_reach_stdin_and_malformed_ones_get_errors,
                a_client_that_does_not_ask_gets_the_reference_json_in_text_messages,
                idle_small_chunks_go_out_at_once,
            }
            lossless {
                a_detached_session_holds_its_child_and_loses_nothing,
                the_async_client_loses_nothing_through_a_cutting_proxy,
            }
            sandbox {
                writes_outside_the_workspace_are_refused_and_flagged,
                git_under_the_workspace_is_read_only_even_when_created_later,
                tmp_is_writable_in_workspace_write_and_not_in_read_only,
                a_deny_entry_cannot_be_read,
                network_is_unix_only_unless_enabled,
                a_symlink_out_of_the_workspace_cannot_be_written_through,
                sigsys_is_flagged_as_a_denial,
                a_sandbox_that_cannot_be_built_fails_the_start,
            }
            containment {
                kill_after_close_reaches_a_redirected_background_job,
                setsid_escapee_dies_with_cgroups_and_survives_process_groups,
                terminate_kills_grandchildren_and_background_jobs,
                ttl_expiry_kills_a_closed_processes_background_job,
                shutdown_closes_with_1001_and_kills_every_tree,
            }
        );
    };
    (@modules $run:ident; $($module:ident { $($name:ident),* $(,)? })*) => {
        $(
            mod $module {
                $(
                    #[test]
                    fn $name() {
                        super::$run($crate::scenarios::$module::$name)
                    }
                )*
            }
        )*
    };
}
