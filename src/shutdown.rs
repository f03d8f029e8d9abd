//! Turning SIGTERM/SIGINT into a graceful stop.
//!
//! Invariant: the first signal starts the graceful stop (the caller's token); a second one ends
//! the process at once with status 130, for an operator who does not want to wait. Given a
//! shutdown timeout, the process ends within it (and a moment) whatever the stop is waiting for.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Resolves at the next SIGTERM or SIGINT, naming it.
pub async fn next_signal() -> &'static str {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can still be stopped with SIGKILL; never return.
        warn!("could not install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// How long past the shutdown timeout the process may still run: the stop ends by its deadline
/// on its own, this only bounds what nothing else does.
const OVERRUN: Duration = Duration::from_millis(500);

/// Cancels `stop` at the first signal; exits the process at the second, or, given a shutdown
/// timeout, when the stop has taken that long.
pub fn on_signal(stop: CancellationToken, timeout: Option<Duration>) {
    tokio::spawn(async move {
        let first = next_signal().await;
        info!(
            signal = first,
            "stopping gracefully (send it again to exit at once)"
        );
        stop.cancel();
        if let Some(timeout) = timeout {
            let watchdog = std::thread::Builder::new()
                .name("stop-deadline".into())
                .spawn(move || {
                    std::thread::sleep(timeout + OVERRUN);
                    eprintln!(
                        "order-worker: the stop did not end within SHUTDOWN_TIMEOUT ({}); \
                         exiting, what was not durable stays uncommitted",
                        humantime::format_duration(timeout)
                    );
                    std::process::exit(1);
                });
            if let Err(e) = watchdog {
                warn!(error = %e, "could not start the stop deadline's watchdog");
            }
        }
        let second = next_signal().await;
        warn!(signal = second, "second signal: exiting without draining");
        std::process::exit(130);
    });
}
