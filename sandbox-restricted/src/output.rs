//! Reading stdout and stderr while they stream, keeping at most a cap of each.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;

/// What was kept of one stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct Captured {
    /// The bytes kept, at most the cap.
    pub bytes: Vec<u8>,
    /// Whether bytes were dropped past the cap.
    pub truncated: bool,
    /// How many bytes were read past the cap and dropped.
    pub dropped: u64,
}

/// A stream's capture, shared so that what was read survives an abandoned reader.
pub(crate) type SharedCapture = Arc<Mutex<Captured>>;

/// Reads `stream` to its end, keeping the first `cap` bytes in `capture`.
///
/// The first time the cap is passed it wakes `overflow` (the supervisor then
/// stops the program) and goes on reading, counting and dropping, so the
/// writer never blocks on a full pipe. Host memory stays bounded by the cap.
pub(crate) async fn read_capped<R: AsyncRead + Unpin>(
    mut stream: R,
    cap: u64,
    capture: SharedCapture,
    overflow: Arc<Notify>,
) {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(mut captured) = capture.lock() else {
            return;
        };
        let room = cap.saturating_sub(captured.bytes.len());
        let kept = n.min(room);
        captured.bytes.extend_from_slice(&chunk[..kept]);
        if kept < n {
            captured.dropped += (n - kept) as u64;
            if !captured.truncated {
                captured.truncated = true;
                overflow.notify_one();
            }
        }
    }
}

/// A snapshot of what a capture holds now.
pub(crate) fn snapshot(capture: &SharedCapture) -> Captured {
    capture
        .lock()
        .map(|captured| captured.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_cap_and_counts_the_rest() {
        let capture = SharedCapture::default();
        let overflow = Arc::new(Notify::new());
        let input: &[u8] = &[7u8; 200_000];
        read_capped(input, 1000, capture.clone(), overflow.clone()).await;
        let captured = snapshot(&capture);
        assert_eq!(captured.bytes.len(), 1000);
        assert!(captured.truncated);
        assert_eq!(captured.dropped, 199_000);
        // The overflow was signalled: a waiter completes at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), overflow.notified())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn short_output_is_kept_whole() {
        let capture = SharedCapture::default();
        read_capped(
            &b"hello"[..],
            1000,
            capture.clone(),
            Arc::new(Notify::new()),
        )
        .await;
        let captured = snapshot(&capture);
        assert_eq!(captured.bytes, b"hello");
        assert!(!captured.truncated);
    }
}
