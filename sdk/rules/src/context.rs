//! The request context: string entries a filter sets for later filters and response phases to
//! read (the auth filter's `auth.subject`, say), bounded so that no filter can make a request
//! hold unbounded memory.
//!
//! The gateway applies these bounds to every entry a filter sets, and so does the SDK's test
//! host; the SDK checks them too, so a filter sees a refusal where it sets the entry.
//!
//! ```
//! use gateway_rules::context::{self, ContextError, Context};
//!
//! let mut entries = Context::default();
//! entries.set("auth.subject", "alice").expect("within the bounds");
//! assert_eq!(entries.get("auth.subject"), Some("alice"));
//! assert_eq!(context::key("no spaces"), Err(ContextError::Key("no spaces".into())));
//! ```

/// Entries a request may hold at once.
pub const MAX_ENTRIES: usize = 32;
/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = 64;
/// The longest value, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;

/// Why an entry was refused. The text is what the filter receives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error(
        "`{0}` is not a valid context key: 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`"
    )]
    Key(String),
    #[error("the value of context entry `{key}` is {len} bytes, over the limit of 4096")]
    Value { key: String, len: usize },
    #[error("a request holds at most 32 context entries")]
    Full,
}

/// A context key: 1 to [`MAX_KEY_LEN`] bytes of ASCII letters, digits, `.`, `_` and `-`.
///
/// ```
/// assert!(gateway_rules::context::key("rate-limit.bucket_1").is_ok());
/// assert!(gateway_rules::context::key("").is_err());
/// ```
pub fn key(key: &str) -> Result<(), ContextError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ContextError::Key(
            key.chars().take(MAX_KEY_LEN + 1).collect(),
        ))
    }
}

/// A value for `key`: at most [`MAX_VALUE_LEN`] bytes.
///
/// ```
/// assert!(gateway_rules::context::value("k", "admin,editor").is_ok());
/// assert!(gateway_rules::context::value("k", &"x".repeat(5000)).is_err());
/// ```
pub fn value(key: &str, value: &str) -> Result<(), ContextError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(ContextError::Value {
            key: key.to_owned(),
            len: value.len(),
        });
    }
    Ok(())
}

/// A request's context entries, in the order they were first set. A handful of entries at most,
/// so a list beats a map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    entries: Vec<(String, String)>,
}

impl Context {
    /// The value of an entry.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Sets an entry within the bounds, replacing any value it had.
    ///
    /// ```
    /// use gateway_rules::context::{Context, ContextError, MAX_ENTRIES};
    ///
    /// let mut entries = Context::default();
    /// for index in 0..MAX_ENTRIES {
    ///     entries.set(&format!("k{index}"), "v").expect("room left");
    /// }
    /// entries.set("k0", "replaced").expect("a replacement takes no room");
    /// assert_eq!(entries.set("one-more", "v"), Err(ContextError::Full));
    /// ```
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ContextError> {
        self::key(key)?;
        self::value(key, value)?;
        if let Some((_, old)) = self.entries.iter_mut().find(|(name, _)| name == key) {
            value.clone_into(old);
            return Ok(());
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(ContextError::Full);
        }
        self.entries.push((key.to_owned(), value.to_owned()));
        Ok(())
    }

    /// Removes an entry; whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(name, _)| name != key);
        self.entries.len() != before
    }

    /// Every entry, in the order they were first set.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
