//! Keeping at most a cap of each output stream while it streams.

/// What was kept of one stream.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    cap: usize,
    /// The bytes kept, at most the cap.
    pub bytes: Vec<u8>,
    /// Whether bytes were dropped past the cap.
    pub truncated: bool,
    /// How many bytes were read past the cap and dropped.
    pub dropped: u64,
}

impl Capture {
    /// An empty capture keeping at most `cap` bytes.
    pub fn new(cap: u64) -> Self {
        Capture {
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            ..Capture::default()
        }
    }

    /// Keeps what fits of `chunk` and counts the rest; returns `true` the
    /// first time the cap is passed (the caller then stops the program).
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        let room = self.cap.saturating_sub(self.bytes.len());
        let kept = chunk.len().min(room);
        self.bytes.extend_from_slice(&chunk[..kept]);
        if kept == chunk.len() {
            return false;
        }
        self.dropped += (chunk.len() - kept) as u64;
        let first = !self.truncated;
        self.truncated = true;
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_cap_and_counts_the_rest() {
        let mut capture = Capture::new(10);
        assert!(!capture.push(b"12345"));
        assert!(!capture.push(b"12345"));
        assert!(!capture.truncated);
        assert!(capture.push(b"abc"));
        assert!(!capture.push(b"defg"));
        assert_eq!(capture.bytes, b"1234512345");
        assert!(capture.truncated);
        assert_eq!(capture.dropped, 7);
    }

    #[test]
    fn a_chunk_straddling_the_cap_is_split() {
        let mut capture = Capture::new(4);
        assert!(capture.push(b"abcdef"));
        assert_eq!(capture.bytes, b"abcd");
        assert_eq!(capture.dropped, 2);
    }
}
