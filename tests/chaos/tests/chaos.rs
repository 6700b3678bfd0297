//! Chaos scenarios against the real llama-orch binaries (SPEC §9 "Chaos: engine kill, adapter
//! kill, orchestrator restart, slow clients"). Each scenario injects one fault, prints what it
//! injected and observed, and asserts that no task was lost (every submitted task reaches a
//! terminal event or a typed error) and no slot leaked (every replica's busy slots return to 0
//! and a fresh task runs). The runner prints the chaos table at the end. See README.md.

mod scenarios;

use llorch_chaos::harness::{Scenario, main as run};

fn main() -> std::process::ExitCode {
    run(&[
        Scenario {
            name: "engine_sigkill_mid_stream",
            run: scenarios::engine_kill::run,
        },
        Scenario {
            name: "client_disconnect_mid_stream",
            run: scenarios::disconnect::run,
        },
        Scenario {
            name: "adapterd_killed_mid_stream",
            run: scenarios::adapter_kill::run,
        },
        Scenario {
            name: "pool_managerd_killed_and_restarted",
            run: scenarios::pool_manager_restart::run,
        },
        Scenario {
            name: "orchestratord_restart_socket_activated",
            run: scenarios::orchestrator_restart::run,
        },
        Scenario {
            name: "slow_and_stalled_sse_clients",
            run: scenarios::slow_clients::run,
        },
        Scenario {
            name: "disk_full_state_directory",
            run: scenarios::disk_full::run,
        },
        Scenario {
            name: "storm_10k_idle_sse_streams",
            run: scenarios::storm::run,
        },
    ])
}
