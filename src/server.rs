//! Serving the plugin protocol on a Unix socket, and stopping cleanly (SPEC §3, last paragraph).
//!
//! The socket is bound before any network call so the engine's start-up probe finds it at once
//! (reference/docker-plugin.md §1.4); a stale socket file from an earlier run is replaced.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use tokio::net::UnixListener;
use tracing::{info, warn};

/// How long calls in flight may run after a stop signal before the daemon exits anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Binds `path` (mode 0600, parent directory created), replacing a stale socket file.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => info!(socket = %path.display(), "removed a stale socket file"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves `app` on `listener` until `shutdown` completes, then drains for at most [`DRAIN_TIMEOUT`]
/// and removes the socket file.
pub async fn serve(
    listener: UnixListener,
    socket: PathBuf,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(());
    });
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    let result = tokio::select! {
        result = &mut server => result,
        _ = async {
            let _ = stop_rx.await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            warn!("calls still running after the drain timeout; exiting anyway");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(&socket);
    info!(socket = %socket.display(), "stopped");
    result
}

/// Completes on SIGTERM or SIGINT (a handler is needed: as PID 1 the default action is ignored).
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}
