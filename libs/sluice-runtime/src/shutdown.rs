//! One shutdown signal for the whole process.

use tokio_util::sync::CancellationToken;

/// Exit code when a second signal interrupts a drain.
pub const EXIT_INTERRUPTED: i32 = 1;

/// A token cancelled on the first SIGTERM or SIGINT. Must be called inside a tokio runtime.
///
/// A second signal while draining exits at once (code 1), so an operator can still stop a
/// process that is stuck draining without reaching for SIGKILL.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        tracing::info!(signal, "shutdown requested: draining (send it again to exit at once)");
        trigger.cancel();
        let again = wait_for_signal().await;
        tracing::warn!(signal = again, "second signal: exiting without finishing the drain");
        std::process::exit(EXIT_INTERRUPTED);
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("cannot install the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("cannot install the SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}
