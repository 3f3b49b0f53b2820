//! Sinks: where replicated data is written.
