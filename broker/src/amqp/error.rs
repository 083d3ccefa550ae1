//! AMQP reply codes and the error that closes a channel (soft) or the whole
//! connection (hard).

use amq_protocol::protocol::AMQPClass;

pub const REPLY_SUCCESS: u16 = 200;
pub const CONTENT_TOO_LARGE: u16 = 311;
pub const NO_ROUTE: u16 = 312;
pub const CONNECTION_FORCED: u16 = 320;
pub const ACCESS_REFUSED: u16 = 403;
pub const NOT_FOUND: u16 = 404;
pub const RESOURCE_LOCKED: u16 = 405;
pub const PRECONDITION_FAILED: u16 = 406;
pub const FRAME_ERROR: u16 = 501;
pub const SYNTAX_ERROR: u16 = 502;
pub const COMMAND_INVALID: u16 = 503;
pub const CHANNEL_ERROR: u16 = 504;
pub const UNEXPECTED_FRAME: u16 = 505;
pub const RESOURCE_ERROR: u16 = 506;
pub const NOT_ALLOWED: u16 = 530;
pub const NOT_IMPLEMENTED: u16 = 540;
pub const INTERNAL_ERROR: u16 = 541;

/// A failed method: `hard` errors close the connection, soft ones the channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {text}")]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
    pub hard: bool,
}

impl AmqpError {
    /// A channel error.
    pub fn soft(code: u16, text: impl Into<String>) -> AmqpError {
        AmqpError {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
            hard: false,
        }
    }

    /// A connection error.
    pub fn hard(code: u16, text: impl Into<String>) -> AmqpError {
        AmqpError {
            hard: true,
            ..AmqpError::soft(code, text)
        }
    }

    /// Names the method that failed (when the error does not already).
    pub fn during(mut self, method: &AMQPClass) -> AmqpError {
        if self.class_id == 0 {
            self.class_id = method.get_amqp_class_id();
            self.method_id = method.get_amqp_method_id();
        }
        self
    }

    /// The reply text, cut to fit a short string.
    pub fn reply_text(&self) -> String {
        let mut t = self.text.clone();
        if t.len() > 255 {
            let mut end = 255;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t.truncate(end);
        }
        t
    }
}

pub type AmqpResult<T> = Result<T, AmqpError>;
