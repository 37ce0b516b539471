//! Neutron's error body: `{"NeutronError":{"type","message","detail"}}` and its status.
//!
//! Every failure a client can cause maps to one of these. The `type` is the name of
//! the exception class Neutron raises for the same condition, so client code that
//! matches on it (openstacksdk, tempest) keeps working.

use serde_json::json;

/// One API error: HTTP status, Neutron exception class name and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct NeutronError {
    pub status: u16,
    pub kind: String,
    pub message: String,
}

/// No error message is longer than this many characters: a backstop behind
/// the validators, which quote at most [`crate::attrs::MAX_QUOTED_CHARS`]
/// characters of a client's value, so a response never echoes a huge request.
pub const MAX_MESSAGE_CHARS: usize = 1024;

impl NeutronError {
    pub fn new(status: u16, kind: impl Into<String>, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if let Some((at, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
            message.truncate(at);
            message.push_str(crate::attrs::ELLIPSIS);
        }
        NeutronError {
            status,
            kind: kind.into(),
            message,
        }
    }

    /// A 400 raised by the API layer itself (webob `HTTPBadRequest` in Neutron).
    pub fn http_bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "HTTPBadRequest", message)
    }

    /// `InvalidInput`: a value that fails validation.
    pub fn invalid_input(error_message: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            "InvalidInput",
            format!("Invalid input for operation: {error_message}."),
        )
    }

    /// A 400 with a specific exception class.
    pub fn bad_request(kind: &str, message: impl Into<String>) -> Self {
        Self::new(400, kind, message)
    }

    pub fn not_found(kind: &str, message: impl Into<String>) -> Self {
        Self::new(404, kind, message)
    }

    pub fn conflict(kind: &str, message: impl Into<String>) -> Self {
        Self::new(409, kind, message)
    }

    /// `HTTPNotFound` for a URL that names no resource collection.
    pub fn no_route() -> Self {
        Self::new(404, "HTTPNotFound", "The resource could not be found.")
    }

    /// `NotImplementedError` → 501, for a documented feature that is not there.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(501, "NotImplementedError", message)
    }

    /// The generic 500 Neutron returns for an unexpected exception.
    pub fn internal() -> Self {
        Self::new(
            500,
            "HTTPInternalServerError",
            "Request Failed: internal server error while processing your request.",
        )
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"NeutronError": {"type": self.kind, "message": self.message, "detail": ""}})
    }
}

/// Short alias used across the crates.
pub type Result<T, E = NeutronError> = std::result::Result<T, E>;
