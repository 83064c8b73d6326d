//! What can be wrong with routing rules.

/// Errors found while compiling rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A path regex does not compile.
    #[error("route {route}: invalid path regex: {message}")]
    InvalidRegex {
        /// Index of the rule.
        route: usize,
        /// What the regex engine said.
        message: String,
    },
    /// A host pattern is malformed.
    #[error("invalid host pattern {pattern:?}: {reason}")]
    InvalidHost {
        /// The pattern as given.
        pattern: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
