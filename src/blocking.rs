//! Running blocking work (mount syscalls, mount-table reads, fsync) off the async workers, so the
//! socket keeps answering Capabilities and Path while Mounts are in flight (SPEC §9.5).

/// Runs `work` on the blocking pool and waits for it.
///
/// A panic inside `work` is carried on to the caller (the release build aborts on panic anyway,
/// see `main.rs`); cancellation only happens while the runtime shuts down.
pub async fn run<T, F>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("blocking task cancelled while the runtime shuts down: {e}"),
        },
    }
}
