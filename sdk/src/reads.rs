//! What a filter declares it reads, so the gateway hands it over with each call.
//!
//! A read the filter did not declare still works: it asks the gateway then, one crossing out of
//! the filter per read. A crossing costs about a third of the call itself, so a filter that
//! reads the same few things on every request declares them and gets them with the call.
//! Declaring what is only read now and then (a header looked at on refusals) would copy it into
//! every call instead: leave that lazy.

use gateway_rules::{context, edit};

use crate::wit::exports::gateway::filter::handler::RequestFields;

/// What a filter reads, returned from [`Filter::reads`](crate::Filter::reads): the request
/// fields and headers of its request phase, the response headers of its response phase, the
/// context entries of both, and the bodies with the longest it buffers.
///
/// Each method adds to what is declared and returns the result. Header names are compared
/// case-insensitively and kept lower-case; context keys are kept as written, since they are
/// case-sensitive. Declaring changes nothing for the filter's code: [`Request::path`] reads the
/// same whether the path came with the call or not.
///
/// ```
/// use gateway_sdk::Reads;
///
/// let reads = Reads::default()
///     .path()
///     .client_ip()
///     .request_header("Authorization")
///     .context("auth.subject")
///     .request_body(64 * 1024);
/// # let _ = reads;
/// ```
///
/// [`Request::path`]: crate::Request::path
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reads {
    pub(crate) fields: RequestFields,
    pub(crate) request_headers: Vec<String>,
    pub(crate) response_headers: Vec<String>,
    pub(crate) context_keys: Vec<String>,
    pub(crate) request_body: Option<u32>,
    pub(crate) response_body: Option<u32>,
}

impl Default for Reads {
    /// Nothing declared: every read asks the gateway when it is made, and no body is read.
    ///
    /// ```
    /// let nothing = gateway_sdk::Reads::default();
    /// # let _ = nothing;
    /// ```
    fn default() -> Self {
        Reads {
            fields: RequestFields::empty(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            context_keys: Vec::new(),
            request_body: None,
            response_body: None,
        }
    }
}

/// Adds a name unless it is there already, so the gateway copies nothing twice.
fn add(names: &mut Vec<String>, name: String) {
    if !names.contains(&name) {
        names.push(name);
    }
}

impl Reads {
    fn field(mut self, field: RequestFields) -> Self {
        self.fields |= field;
        self
    }

    /// The method, in the request phase.
    ///
    /// ```
    /// let reads = gateway_sdk::Reads::default().method();
    /// # let _ = reads;
    /// ```
    #[must_use]
    pub fn method(self) -> Self {
        self.field(RequestFields::METHOD)
    }

    /// The path, in the request phase.
    ///
    /// ```
    /// let reads = gateway_sdk::Reads::default().path();
    /// # let _ = reads;
    /// ```
    #[must_use]
    pub fn path(self) -> Self {
        self.field(RequestFields::PATH)
    }

    /// The query, in the request phase.
    ///
    /// ```
    /// let reads = gateway_sdk::Reads::default().query();
    /// # let _ = reads;
    /// ```
    #[must_use]
    pub fn query(self) -> Self {
        self.field(RequestFields::QUERY)
    }

    /// The authority (the host the client asked for), in the request phase.
    ///
    /// ```
    /// let reads = gateway_sdk::Reads::default().authority();
    /// # let _ = reads;
    /// ```
    #[must_use]
    pub fn authority(self) -> Self {
        self.field(RequestFields::AUTHORITY)
    }

    /// The client's IP address, in the request phase.
    ///
    /// ```
    /// let reads = gateway_sdk::Reads::default().client_ip();
    /// # let _ = reads;
    /// ```
    #[must_use]
    pub fn client_ip(self) -> Self {
        self.field(RequestFields::CLIENT_IP)
    }

    /// Every value of a request header, in the request phase.
    ///
    /// ```
    /// let reads = gateway_sdk::Reads::default().request_header("X-Forwarded-For");
    /// # let _ = reads;
    /// ```
    #[must_use]
    pub fn request_header(mut self, name: &str) -> Self {
        add(&mut self.request_headers, name.to_ascii_lowercase());
        self
    }

    /// Every value of a response header, in the response phase.
    ///
    /// ```
    /// let reads = gateway_sdk::Reads::default().response_header("content-type");
    /// # let _ = reads;
    /// ```
    #[must_use]
    pub fn response_header(mut self, name: &str) -> Self {
        add(&mut self.response_headers, name.to_ascii_lowercase());
        self
    }

    /// A request context entry, in both phases.
    ///
    /// ```
    /// let reads = gateway_sdk::Reads::default().context("auth.subject");
    /// # let _ = reads;
    /// ```
    #[must_use]
    pub fn context(mut self, key: &str) -> Self {
        add(&mut self.context_keys, key.to_owned());
        self
    }

    /// The request body, buffered up to `limit` bytes, in the request phase. Without it the
    /// filter sees no request body ([`Request::body`](crate::Request::body) is `None`); a
    /// longer body is [`Body::TooLarge`](crate::Body::TooLarge) and streams on untouched.
    ///
    /// ```
    /// let reads = gateway_sdk::Reads::default().request_body(16 * 1024);
    /// # let _ = reads;
    /// ```
    #[must_use]
    pub fn request_body(mut self, limit: u32) -> Self {
        self.request_body = Some(limit);
        self
    }

    /// The response body, buffered up to `limit` bytes, in the response phase, as
    /// [`Reads::request_body`] is for the request.
    ///
    /// ```
    /// let reads = gateway_sdk::Reads::default().response_body(1024 * 1024);
    /// # let _ = reads;
    /// ```
    #[must_use]
    pub fn response_body(mut self, limit: u32) -> Self {
        self.response_body = Some(limit);
        self
    }

    /// Refuses names that could never match: a header name that is no token, a context key out
    /// of bounds. The gateway refuses them too; saying so here names the filter's mistake.
    pub(crate) fn check(&self) -> Result<(), String> {
        let headers = self.request_headers.iter().chain(&self.response_headers);
        for name in headers {
            edit::check_header_name(name).map_err(|error| format!("declared reads: {error}"))?;
        }
        for key in &self.context_keys {
            context::key(key).map_err(|error| format!("declared reads: {error}"))?;
        }
        Ok(())
    }

    pub(crate) fn has(&self, field: RequestFields) -> bool {
        self.fields.contains(field)
    }

    pub(crate) fn has_request_header(&self, name: &str) -> bool {
        self.request_headers
            .iter()
            .any(|declared| declared.eq_ignore_ascii_case(name))
    }

    pub(crate) fn has_response_header(&self, name: &str) -> bool {
        self.response_headers
            .iter()
            .any(|declared| declared.eq_ignore_ascii_case(name))
    }

    pub(crate) fn has_context(&self, key: &str) -> bool {
        self.context_keys.iter().any(|declared| declared == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_declared_once_and_header_names_lower_case() {
        let reads = Reads::default()
            .request_header("X-Forwarded-For")
            .request_header("x-forwarded-for")
            .context("Auth.Subject")
            .context("Auth.Subject");
        assert_eq!(reads.request_headers, ["x-forwarded-for"]);
        assert!(reads.has_request_header("X-FORWARDED-FOR"));
        assert_eq!(reads.context_keys, ["Auth.Subject"]);
        assert!(!reads.has_context("auth.subject"));
    }

    #[test]
    fn names_that_could_never_match_are_refused() {
        let bad_header = Reads::default().response_header("bad name");
        assert_eq!(
            bad_header.check(),
            Err("declared reads: `bad name` is not a valid header name".to_owned())
        );
        let bad_key = Reads::default().context("no spaces");
        assert!(bad_key.check().is_err());
        assert_eq!(Reads::default().path().request_body(10).check(), Ok(()));
    }
}
