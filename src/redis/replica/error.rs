//! Errors of the replica link. Whether an error is worth a retry is decided here, once.

use crate::redis::conn::ConnError;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The master answered the handshake in a way tandem cannot use.
    #[error("{endpoint}: {command} refused: {message}")]
    Refused {
        endpoint: String,
        command: &'static str,
        message: String,
    },
    /// The master sent bytes that are not a replication stream.
    #[error("{endpoint}: bad replication stream at offset {offset}: {detail}")]
    Stream {
        endpoint: String,
        offset: u64,
        detail: String,
    },
    /// The network side stopped for good; the text is its error.
    #[error("{0}")]
    Stopped(String),
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
}

impl LinkError {
    /// Retrying helps for network trouble and for masters that are loading or have lost
    /// their own master; it does not for wrong credentials, a refusal, or a corrupt stream.
    pub fn is_retryable(&self) -> bool {
        match self {
            LinkError::Conn(e) => e.is_retryable(),
            LinkError::Refused { message, .. } => {
                crate::redis::conn::is_transient_server_error(message)
                    || message.contains("not connected with my master")
            }
            LinkError::Stream { .. } | LinkError::Spool(_) | LinkError::Stopped(_) => false,
        }
    }
}
