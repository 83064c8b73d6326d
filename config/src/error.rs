//! The one error type of this crate: where in which file, and what was
//! expected there.

use std::fmt;
use std::path::PathBuf;

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value does not fit the schema, or
    /// the whole does not hold together (a missing cluster, a duplicate
    /// name, a bad address).
    #[error("{at}: {message}")]
    Invalid {
        /// Where the problem is.
        at: Location,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// A place in a configuration file, 1-based, as editors count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name as given, or `<built-in>`/`<string>`.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

impl Location {
    /// The location of byte `offset` in `source`.
    pub fn of(file: &str, source: &str, offset: usize) -> Location {
        let offset = offset.min(source.len());
        let before = source.get(..offset).unwrap_or(source);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        Location {
            file: file.to_owned(),
            line,
            col,
        }
    }
}

impl Error {
    /// Where the error is, when it is inside the file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Invalid { at, .. } => Some(at),
            Error::Read { .. } => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters_from_one() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(Location::of("f", src, 0).to_string(), "f:1:1");
        let at = src.find('=').unwrap();
        assert_eq!(Location::of("f", src, at).to_string(), "f:1:3");
        let second = src.rfind('=').unwrap();
        assert_eq!(Location::of("f", src, second).to_string(), "f:2:4");
    }
}
