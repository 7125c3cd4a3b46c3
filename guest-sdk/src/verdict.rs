//! Verdict constructors and the JSON-RPC error codes Portcullis policies deny with.
//!
//! A denial carries `code` and `message` (sent to the agent as the JSON-RPC error)
//! and `reason` (a short sentence for the audit log, never shown to the agent).

use crate::{Denial, ResultVerdict, Verdict};

/// A JSON-RPC error code with its fixed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: i32,
    pub message: &'static str,
}

/// The tool is hidden or outside what the agent may use: `-32601 Tool not found`.
pub const TOOL_NOT_FOUND: ErrorCode = ErrorCode {
    code: -32601,
    message: "Tool not found",
};

/// The prompt is hidden, unknown or outside what the agent may use:
/// `-32602 Prompt not found`, exactly what the gateway answers for a prompt no
/// connector lists (so a blocked prompt looks like one that does not exist).
pub const PROMPT_NOT_FOUND: ErrorCode = ErrorCode {
    code: -32602,
    message: "Prompt not found",
};

/// The resource is hidden, unknown or outside what the agent may use:
/// `-32002 Resource not found`, exactly what the gateway answers for a URI no
/// connector serves (so a blocked resource looks like one that does not exist).
pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode {
    code: -32002,
    message: "Resource not found",
};

/// The agent's scopes do not reach the connector: `-32003 Insufficient scope`.
pub const INSUFFICIENT_SCOPE: ErrorCode = ErrorCode {
    code: -32003,
    message: "Insufficient scope",
};

/// The policy cannot decide (e.g. unreadable settings): `-32603 Internal error`.
pub const INTERNAL_ERROR: ErrorCode = ErrorCode {
    code: -32603,
    message: "Internal error",
};

impl ErrorCode {
    /// A [`Denial`] with this code and message and the given audit reason.
    pub fn denial(&self, reason: impl Into<String>) -> Denial {
        Denial {
            code: self.code,
            message: self.message.to_string(),
            reason: reason.into(),
        }
    }

    /// `Verdict::Deny` with this code and message and the given audit reason.
    pub fn deny(&self, reason: impl Into<String>) -> Verdict {
        Verdict::Deny(self.denial(reason))
    }

    /// `ResultVerdict::Deny` with this code and message and the given audit reason.
    pub fn deny_result(&self, reason: impl Into<String>) -> ResultVerdict {
        ResultVerdict::Deny(self.denial(reason))
    }
}

/// `Verdict::Allow`.
pub fn allow() -> Verdict {
    Verdict::Allow
}

/// `Verdict::Deny` with an arbitrary code, agent-facing message and audit reason.
pub fn deny(code: i32, message: impl Into<String>, reason: impl Into<String>) -> Verdict {
    Verdict::deny(code, message, reason)
}

impl Verdict {
    /// `Verdict::Deny` with an arbitrary code, agent-facing message and audit reason.
    pub fn deny(code: i32, message: impl Into<String>, reason: impl Into<String>) -> Self {
        Verdict::Deny(Denial {
            code,
            message: message.into(),
            reason: reason.into(),
        })
    }

    /// Whether this is `Verdict::Allow`.
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }

    /// The denial, if this is `Verdict::Deny`.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Verdict::Allow => None,
            Verdict::Deny(d) => Some(d),
        }
    }
}

impl ResultVerdict {
    /// `ResultVerdict::Deny` with an arbitrary code, agent-facing message and reason.
    pub fn deny(code: i32, message: impl Into<String>, reason: impl Into<String>) -> Self {
        ResultVerdict::Deny(Denial {
            code,
            message: message.into(),
            reason: reason.into(),
        })
    }
}
