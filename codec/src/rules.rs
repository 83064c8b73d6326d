//! Header edits a route applies to the messages it passes on.

/// Headers to add, set and remove; names lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderRules {
    /// Appended beside any the message has.
    pub add: Vec<(String, String)>,
    /// Replace any the message has.
    pub set: Vec<(String, String)>,
    /// Dropped.
    pub remove: Vec<String>,
}

impl HeaderRules {
    /// True when the rules change nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }

    /// True when a header of the message called `name` is dropped (removed,
    /// or replaced by a `set`).
    pub fn drops(&self, name: &str) -> bool {
        self.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
            || self.set.iter().any(|(s, _)| s.eq_ignore_ascii_case(name))
    }
}
