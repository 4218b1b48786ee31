//! `-v` / `-vv`: the library's log lines on stderr. Only comfy-proxy's own targets are shown:
//! their lines name servers and URLs with any token redacted, while a dependency may log more
//! (tungstenite's `trace` of a handshake shows the request as sent, secrets and all).
//!
//! While progress bars are drawn, lines go through [`set_printer`] so as not to tear them.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use comfy_proxy::text::terminal_safe_line;
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where a line goes instead of plain stderr (the progress bars' `suspend`).
type Printer = Box<dyn Fn(&str) + Send + Sync>;

struct Stderr {
    level: LevelFilter,
    started: Instant,
    printer: Mutex<Option<Printer>>,
}

static LOGGER: OnceLock<Stderr> = OnceLock::new();

/// The level `-v` repeated `count` times asks for: off, info, debug, trace.
pub fn level(count: u8) -> LevelFilter {
    match count {
        0 => LevelFilter::Off,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger at `level`; nothing when it is off.
pub fn init(level: LevelFilter) {
    if level == LevelFilter::Off {
        return;
    }
    let logger = LOGGER.get_or_init(|| Stderr {
        level,
        started: Instant::now(),
        printer: Mutex::new(None),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Prints lines through `printer` from now on (`None`: plain stderr again).
pub fn set_printer(printer: Option<Printer>) {
    if let Some(logger) = LOGGER.get() {
        *logger.printer.lock().unwrap_or_else(|e| e.into_inner()) = printer;
    }
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level && metadata.target().starts_with("comfy_proxy")
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        // A server's words may be in the message: no escape sequence reaches the terminal.
        let message = record.args().to_string();
        let line = format!(
            "{:8.3} {level:5} {}",
            self.started.elapsed().as_secs_f64(),
            terminal_safe_line(&message)
        );
        let printer = self.printer.lock().unwrap_or_else(|e| e.into_inner());
        match printer.as_ref() {
            Some(print) => print(&line),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_map_to_levels() {
        assert_eq!(level(0), LevelFilter::Off);
        assert_eq!(level(1), LevelFilter::Info);
        assert_eq!(level(2), LevelFilter::Debug);
        assert_eq!(level(9), LevelFilter::Trace);
    }

    #[test]
    fn only_comfy_proxy_targets_show() {
        let logger = Stderr {
            level: LevelFilter::Trace,
            started: Instant::now(),
            printer: Mutex::new(None),
        };
        let ours = Metadata::builder()
            .target("comfy_proxy::pool")
            .level(Level::Info)
            .build();
        let theirs = Metadata::builder()
            .target("tungstenite::handshake::client")
            .level(Level::Info)
            .build();
        assert!(logger.enabled(&ours));
        assert!(!logger.enabled(&theirs));
    }
}
