//! The MongoDB layer's one error type. Whether an error is worth a retry is decided
//! here, in [`MongoError::from_driver`] (and for the Kafka sink of `tandem mongo kafka`
//! in [`MongoError::from_kafka`]), and nowhere else.

use std::fmt;

use crate::core::MongoPosition;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The same operation can succeed later: a network error, a primary stepping down,
    /// a transaction write conflict.
    Retryable,
    /// Retrying cannot help: bad input, bad credentials, a server that refuses the
    /// operation for good.
    Fatal,
}

#[derive(Debug, Clone)]
pub struct MongoError {
    pub kind: ErrorKind,
    /// What tandem was doing, naming the endpoint, namespace or document.
    pub context: String,
    pub message: String,
    /// The server's error code, when it gave one.
    pub code: Option<i32>,
    /// Where the replication loop stood, when the error comes from it.
    pub position: Option<String>,
}

impl fmt::Display for MongoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.message)?;
        if let Some(p) = &self.position {
            write!(f, " (at source position {p})")?;
        }
        Ok(())
    }
}

impl std::error::Error for MongoError {}

pub type Result<T, E = MongoError> = std::result::Result<T, E>;

/// The code of "the source's history no longer holds the checkpoint" (not a server code:
/// tandem's, so `--on-history-lost` can tell it from the rest).
pub const HISTORY_LOST: i32 = -286;

/// tandem's code of "no Kafka broker answered" (fatal before the first connection,
/// retried after it).
pub const KAFKA_UNREACHABLE: i32 = -9092;

/// Server codes after which the same request can succeed: elections, shutdowns,
/// network trouble, interrupted or conflicting transactions.
const RETRYABLE_CODES: &[i32] = &[
    6, 7, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 251, 24, 46,
];

impl MongoError {
    pub fn fatal(context: impl Into<String>, message: impl Into<String>) -> Self {
        MongoError {
            kind: ErrorKind::Fatal,
            context: context.into(),
            message: message.into(),
            code: None,
            position: None,
        }
    }

    pub fn retryable(context: impl Into<String>, message: impl Into<String>) -> Self {
        MongoError {
            kind: ErrorKind::Retryable,
            ..MongoError::fatal(context, message)
        }
    }

    /// Classifies a driver error.
    pub fn from_driver(context: impl Into<String>, e: &mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind as K;
        let code = driver_code(e);
        let retryable = e.contains_label("TransientTransactionError")
            || e.contains_label("UnknownTransactionCommitResult")
            || e.contains_label("RetryableWriteError")
            || matches!(
                *e.kind,
                K::Io(_) | K::ServerSelection { .. } | K::ConnectionPoolCleared { .. }
            )
            || code.is_some_and(|c| RETRYABLE_CODES.contains(&c));
        let auth = matches!(*e.kind, K::Authentication { .. }) || code == Some(18);
        MongoError {
            kind: if retryable && !auth {
                ErrorKind::Retryable
            } else {
                ErrorKind::Fatal
            },
            context: context.into(),
            message: short_message(e),
            code,
            position: None,
        }
    }

    /// Classifies a Kafka client error. `brokers` names the cluster (the bootstrap list,
    /// which holds no credentials: those are librdkafka settings, never printed).
    pub fn from_kafka(context: impl Into<String>, e: &rdkafka::error::KafkaError) -> Self {
        use rdkafka::error::{KafkaError as E, RDKafkaErrorCode as C};
        let code = e.rdkafka_error_code();
        let txn_retriable = match e {
            E::Transaction(t) => t.is_retriable() || t.txn_requires_abort() && !t.is_fatal(),
            _ => false,
        };
        let (retryable, message) = match code {
            Some(C::MessageSizeTooLarge) => (
                false,
                "the message is larger than the broker accepts (its message.max.bytes / the \
                 topic's max.message.bytes)"
                    .to_string(),
            ),
            Some(
                C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::GroupAuthorizationFailed,
            ) => (false, format!("not authorized: {e}")),
            Some(C::SaslAuthenticationFailed | C::Authentication) => {
                (false, format!("authentication failed: {e}"))
            }
            Some(C::ProducerFenced | C::Fenced | C::InvalidProducerEpoch) => (
                false,
                format!("{e}: another tandem with the same --id took over this link"),
            ),
            Some(C::UnknownTopicOrPartition | C::UnknownTopic) => (false, e.to_string()),
            Some(
                C::BrokerTransportFailure
                | C::Resolve
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::MessageTimedOut
                | C::RequestTimedOut
                | C::QueueFull
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::ConcurrentTransactions,
            ) => (true, e.to_string()),
            _ => (txn_retriable, e.to_string()),
        };
        // A configuration error's text holds the value set, which may be a password.
        let message = match e {
            E::ClientConfig(_, desc, key, _) => format!("setting {key}: {desc}"),
            _ => message,
        };
        MongoError {
            kind: if retryable {
                ErrorKind::Retryable
            } else {
                ErrorKind::Fatal
            },
            context: context.into(),
            message,
            code: code.map(|c| c as i32),
            position: None,
        }
    }

    pub fn at(mut self, pos: &MongoPosition) -> Self {
        self.position = Some(pos.to_string());
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

/// The server's code of a command or write error.
pub fn driver_code(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind as K, WriteFailure};
    match &*e.kind {
        K::Command(c) => Some(c.code),
        K::Write(WriteFailure::WriteError(w)) => Some(w.code),
        K::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        K::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|w| w.first())
            .map(|w| w.code),
        _ => None,
    }
}

/// The driver's message without its debug noise.
fn short_message(e: &mongodb::error::Error) -> String {
    use mongodb::error::ErrorKind as K;
    match &*e.kind {
        K::Command(c) => format!("{} ({}, code {})", c.message, c.code_name, c.code),
        K::Authentication { message, .. } => format!("authentication failed: {message}"),
        K::ServerSelection { message, .. } => {
            let m = message.split(", Topology:").next().unwrap_or(message);
            format!("cannot reach the server: {m}")
        }
        _ => e.to_string(),
    }
}

/// A task of a group (`core::shutdown::TaskGroup`) that panicked or was cancelled.
impl From<tokio::task::JoinError> for MongoError {
    fn from(e: tokio::task::JoinError) -> Self {
        MongoError::fatal("task", format!("a task failed: {e}"))
    }
}
