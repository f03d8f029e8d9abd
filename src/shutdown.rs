//! Turning SIGTERM/SIGINT into a graceful stop.
//!
//! Invariant: the first signal starts the graceful stop (the caller's token); a second one ends
//! the process at once with status 130, for an operator who does not want to wait.

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

/// Cancels `stop` at the first signal; exits the process at the second.
pub fn on_signal(stop: CancellationToken) {
    tokio::spawn(async move {
        let first = next_signal().await;
        info!(
            signal = first,
            "stopping gracefully (send it again to exit at once)"
        );
        stop.cancel();
        let second = next_signal().await;
        warn!(signal = second, "second signal: exiting without draining");
        std::process::exit(130);
    });
}
