//! How a command fails, and the exit code each failure gets.

use std::fmt;
use std::process::ExitCode;

/// A command that could not do its work. Jobs that ran and failed are not this: they are
/// counted and turn into exit code 1 at the end.
#[derive(Debug)]
pub enum Fail {
    /// The arguments, a file they name, or the environment are wrong: exit code 2. The message
    /// says what to fix.
    Usage(String),
    /// Something outside the user's input broke (a socket, the disk): exit code 1.
    Runtime(String),
}

impl Fail {
    /// The exit code: 2 for usage and configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            Self::Runtime(_) => ExitCode::from(1),
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m) | Self::Runtime(m) => f.write_str(m),
        }
    }
}

/// A usage or configuration error (exit code 2).
pub fn usage(message: impl Into<String>) -> Fail {
    Fail::Usage(message.into())
}

/// A failure of the machinery (exit code 1).
pub fn runtime(message: impl Into<String>) -> Fail {
    Fail::Runtime(message.into())
}

/// What commands return: an exit code, or why they could not run.
pub type Result<T> = std::result::Result<T, Fail>;
