//! Serving the plugin protocol on a Unix socket, and stopping cleanly (SPEC §3, last paragraph).
//!
//! The socket is bound before any network call so the engine's start-up probe finds it at once
//! (reference/docker-plugin.md §1.4). A socket file left by a crashed run is replaced; one that a live
//! instance still serves is not, so a second instance cannot silently take the engine's calls away from
//! the first (whose mounts and counts it would not know).
//!
//! Request bodies are read to their end here, before routing; what they mean is `protocol`'s business.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use bytes::BytesMut;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::protocol::MAX_BODY;

/// How long calls in flight may run after a stop signal before the daemon exits anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// How long `bind` waits for a connection to an existing socket file before deciding that a live but
/// stuck instance holds it. A listening socket accepts into its backlog at once; only a full backlog waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds `path` (mode 0600, parent directory created). An existing file there is replaced when nothing
/// serves on it (a stale socket, or not a socket at all); a socket that accepts a connection is refused.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    remove_unless_served(path)?;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Removes the file at `path` unless a live process is listening on it.
fn remove_unless_served(path: &Path) -> io::Result<()> {
    let file_type = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if file_type.is_socket() {
        match probe(path) {
            // Nobody listens: the socket of a run that crashed or was killed.
            Err(e) if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) => {}
            Ok(()) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another plugin instance is already serving on SOCKET={}; stop it first or choose another SOCKET",
                        path.display()
                    ),
                ))
            }
            // A timeout (a listener that does not accept) or a permission error: someone owns it,
            // and removing it would be stealing.
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "SOCKET={} exists and may belong to another plugin instance ({e}); stop it first or choose another SOCKET",
                        path.display()
                    ),
                ))
            }
        }
        info!(socket = %path.display(), "replacing a stale socket file nobody listens on");
    } else {
        info!(socket = %path.display(), "replacing a file that is not a socket");
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Connects to `path` and hangs up, giving up after [`PROBE_TIMEOUT`]. std has no connect timeout for
/// Unix sockets, so the connect runs on its own thread; a thread stuck on a full backlog is left behind,
/// which is harmless because the caller then refuses to start.
fn probe(path: &Path) -> io::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let target = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::os::unix::net::UnixStream::connect(target).map(drop));
    });
    rx.recv_timeout(PROBE_TIMEOUT).unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {PROBE_TIMEOUT:?}"),
        ))
    })
}

/// Serves `app` on `listener` until `shutdown` completes, then drains for at most [`DRAIN_TIMEOUT`]
/// and removes the socket file.
pub async fn serve(
    listener: UnixListener,
    socket: PathBuf,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = app.layer(middleware::from_fn(read_to_end));
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

/// How much of a request body is read (and dropped) past [`MAX_BODY`] so that its sender gets the
/// "too large" answer; a body larger still is left unread and its sender may see a broken connection.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Reads each request body to its end before routing, keeping the first `MAX_BODY + 1` bytes: enough
/// for the protocol to see that it is too large and answer with a JSON `Err`. Without this, hyper
/// closes a connection whose request was not read to the end, and a client still writing a large body
/// gets a broken pipe instead of that answer (found by tests/integration/properties.rs).
async fn read_to_end(request: Request, next: Next) -> Response {
    let (parts, mut body) = request.into_parts();
    let mut kept = BytesMut::new();
    let mut read = 0usize;
    let mut failure = None;
    while read <= DRAIN_LIMIT {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                failure = Some(e);
                break;
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read += data.len();
                    let room = (MAX_BODY + 1).saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
    let kept = kept.freeze();
    let body = match failure {
        None => Body::from(kept),
        // A body that broke off stays broken, so the protocol refuses it rather than act on a part.
        Some(e) => Body::new(StreamBody::new(futures_util::stream::iter([
            Ok(Frame::data(kept)),
            Err(e),
        ]))),
    };
    next.run(Request::from_parts(parts, body)).await
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
