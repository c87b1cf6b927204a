//! The bearer token of [`RestClient`](super::RestClient): given inline, or read from a
//! `tokenFile` and re-read at most once a minute so rotated tokens are picked up. Read on
//! the thread making each request; a failed re-read keeps the previous token.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a `tokenFile` is re-read, to pick up rotated tokens.
const TOKEN_REFRESH: Duration = Duration::from_secs(60);

/// The bearer token, re-read from its file at most once per [`TOKEN_REFRESH`].
pub(super) struct TokenSource {
    file: Option<PathBuf>,
    /// The token and when it was last read from `file`.
    cached: Mutex<(Option<String>, Instant)>,
}

impl TokenSource {
    /// A source starting from `token` (the kubeconfig's, read from `file` when it names one),
    /// re-reading `file` once [`TOKEN_REFRESH`] has passed.
    pub(super) fn new(file: Option<PathBuf>, token: Option<String>) -> TokenSource {
        TokenSource {
            file,
            cached: Mutex::new((token, Instant::now())),
        }
    }

    /// The token to send, if any.
    pub(super) fn bearer(&self) -> Option<String> {
        let (token, read_at) = self
            .cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(file) = &self.file else {
            return token;
        };
        if read_at.elapsed() < TOKEN_REFRESH {
            return token;
        }
        // Read without the lock held; two threads may both read, which is harmless.
        let fresh = match std::fs::read_to_string(file) {
            Ok(text) => Some(text.trim().to_string()),
            Err(e) => {
                let file = file.display();
                log::warn!("re-reading token file {file}: {e}; keeping the previous token");
                None
            }
        };
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fresh) = fresh {
            cached.0 = Some(fresh);
        }
        cached.1 = Instant::now();
        cached.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_reread_after_a_minute() {
        let dir = std::env::temp_dir().join(format!("rkubelet-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "new\n").unwrap();
        let Some(long_ago) = Instant::now().checked_sub(TOKEN_REFRESH * 2) else {
            return; // The machine has been up for less than two minutes.
        };
        let source = TokenSource {
            file: Some(file.clone()),
            cached: Mutex::new((Some("old".into()), Instant::now())),
        };
        assert_eq!(source.bearer().as_deref(), Some("old"));
        source.cached.lock().unwrap().1 = long_ago;
        assert_eq!(source.bearer().as_deref(), Some("new"));
        std::fs::remove_file(&file).unwrap();
        source.cached.lock().unwrap().1 = long_ago;
        assert_eq!(
            source.bearer().as_deref(),
            Some("new"),
            "a failed re-read keeps the token"
        );
    }
}
