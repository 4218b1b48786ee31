//! Text from a server, made safe to print on a terminal.
//!
//! Node error messages, tracebacks, file names and anything else a server (or a recording of
//! one) sends may hold terminal control sequences: an ANSI escape that recolours or clears the
//! screen, an OSC sequence that retitles the window or plants a hyperlink, a carriage return that
//! overwrites what the line said, a bell, bidirectional overrides that reorder what is shown.
//! [`terminal_safe`] removes them whole (not only their first byte, which would leave `[31m`
//! behind) and keeps everything else, line breaks and tabs included; [`terminal_safe_line`] also
//! turns line breaks and tabs into spaces, for one-line messages.

use std::borrow::Cow;

/// `text` without control characters or terminal escape sequences; `\n` and `\t` are kept.
///
/// Removed: ANSI/ECMA-48 escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ST`, DCS,
/// SOS, PM and APC strings, two- and three-byte escapes), their 8-bit C1 forms, every other C0
/// and C1 control (CR, BEL, backspace, NUL...), DEL, and the Unicode bidirectional controls.
/// Text with none of these is returned borrowed.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    clean(text, false)
}

/// Like [`terminal_safe`], with each line break or tab turned into a space: for messages that
/// must stay on one line.
pub fn terminal_safe_line(text: &str) -> Cow<'_, str> {
    clean(text, true)
}

/// JSON text (one document, as `serde_json` writes it, compact or pretty) with every character
/// [`terminal_safe`] would remove written as a `\uXXXX` escape instead: the document means the
/// same, and prints safely. Such characters can only occur inside JSON strings (`serde_json`
/// escapes C0 controls itself, but writes DEL, C1 controls and bidirectional controls raw).
pub fn terminal_safe_json(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_unsafe) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_unsafe(c) {
            // Every unsafe character is in the Basic Multilingual Plane: one escape suffices.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Unicode's bidirectional formatting controls (the "Trojan Source" characters).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c)
}

/// What the scanner is inside of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// After ESC.
    Escape,
    /// After ESC and one or more intermediate bytes (0x20-0x2f).
    EscapeIntermediate,
    /// Inside a CSI sequence: parameters and intermediates until a final byte.
    Csi,
    /// Inside an OSC, DCS, SOS, PM or APC string, until BEL (OSC) or ST.
    Str,
    /// ESC seen inside a string: `\` ends it.
    StrEscape,
}

fn clean(text: &str, one_line: bool) -> Cow<'_, str> {
    let needs_work = text
        .chars()
        .any(|c| is_unsafe(c) || (one_line && (c == '\n' || c == '\t')));
    if !needs_work {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut state = State::Text;
    for c in text.chars() {
        state = match state {
            State::Text => text_char(c, one_line, &mut out),
            State::Escape => match c {
                '[' => State::Csi,
                ']' | 'P' | 'X' | '^' | '_' => State::Str,
                '\u{20}'..='\u{2f}' => State::EscapeIntermediate,
                '\u{30}'..='\u{7e}' => State::Text,
                // Not an escape after all: drop the ESC, keep what follows.
                _ => text_char(c, one_line, &mut out),
            },
            State::EscapeIntermediate => match c {
                '\u{20}'..='\u{2f}' => State::EscapeIntermediate,
                '\u{30}'..='\u{7e}' => State::Text,
                _ => text_char(c, one_line, &mut out),
            },
            State::Csi => match c {
                '\u{20}'..='\u{3f}' => State::Csi,
                '\u{40}'..='\u{7e}' => State::Text,
                // A malformed sequence ends where the malformation starts.
                _ => text_char(c, one_line, &mut out),
            },
            State::Str => match c {
                '\u{07}' | '\u{9c}' => State::Text,
                '\u{1b}' => State::StrEscape,
                _ => State::Str,
            },
            State::StrEscape => match c {
                '\\' => State::Text,
                '\u{1b}' => State::StrEscape,
                _ => State::Str,
            },
        };
    }
    Cow::Owned(out)
}

/// Handles `c` outside any sequence: keeps it, replaces it, or starts a sequence.
fn text_char(c: char, one_line: bool, out: &mut String) -> State {
    match c {
        '\u{1b}' => State::Escape,
        // 8-bit forms: CSI, and the string introducers OSC, DCS, SOS, PM, APC.
        '\u{9b}' => State::Csi,
        '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => State::Str,
        '\n' | '\t' if one_line => {
            out.push(' ');
            State::Text
        }
        c if is_unsafe(c) => State::Text,
        c => {
            out.push(c);
            State::Text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_and_controls_go_whole() {
        let cases: &[(&str, &str)] = &[
            ("plain text, café ✓", "plain text, café ✓"),
            ("\x1b[31mred\x1b[0m", "red"),
            ("\x1b[1;38;5;196mbold\x1b[m!", "bold!"),
            ("\x1b[2J\x1b[Hcleared", "cleared"),
            ("\x1b]0;pwned title\x07after", "after"),
            ("\x1b]0;pwned title\x1b\\after", "after"),
            (
                "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",
                "click",
            ),
            ("\x1bPdevice control\x1b\\x", "x"),
            ("\x1b(Bcharset", "charset"),
            ("\x1b7saved\x1b8", "saved"),
            ("\u{9b}31mC1 csi", "C1 csi"),
            ("\u{9d}0;title\u{9c}ok", "ok"),
            ("progress 50%\rdone", "progress 50%done"),
            ("bell\x07 nul\0 bs\x08 del\x7f", "bell nul bs del"),
            ("\u{202e}txt.exe\u{202c}", "txt.exe"),
            ("\u{2066}isolate\u{2069}", "isolate"),
            ("line one\nline two\ttab", "line one\nline two\ttab"),
            // Unterminated sequences swallow only themselves.
            ("tail \x1b[31", "tail "),
            ("tail \x1b]0;no end", "tail "),
            ("lone escape \x1b", "lone escape "),
            ("\x1b\x1b[31mx", "x"),
            ("\x1b[31\nnext", "\nnext"),
            ("\x1béclair", "éclair"),
        ];
        for (input, expected) in cases {
            assert_eq!(terminal_safe(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn clean_text_is_borrowed() {
        assert!(matches!(terminal_safe("ok\nfine\t"), Cow::Borrowed(_)));
        assert!(matches!(terminal_safe_line("ok fine"), Cow::Borrowed(_)));
        assert!(matches!(terminal_safe_line("a\nb"), Cow::Owned(_)));
    }

    #[test]
    fn one_line_mode_flattens_breaks() {
        assert_eq!(
            terminal_safe_line("Traceback:\n\tFile \"x\"\r\n\x1b[31mboom"),
            "Traceback:  File \"x\" boom"
        );
    }

    #[test]
    fn json_keeps_its_meaning() {
        let value = serde_json::json!({"message": "a\u{7f}b\u{9b}31mc\u{202e}d\x1b[0m\r\n"});
        let text = value.to_string();
        let safe = terminal_safe_json(&text);
        assert!(!safe.chars().any(is_unsafe), "{safe:?}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
        assert!(matches!(
            terminal_safe_json("{\"a\":\"b\"}"),
            Cow::Borrowed(_)
        ));
    }

    proptest::proptest! {
        #[test]
        fn nothing_unsafe_survives(text in "(\\PC|\\p{Cc}|\u{1b}\\[|\u{1b}\\]|\u{202e}){0,64}") {
            let safe = terminal_safe(&text);
            proptest::prop_assert!(!safe.chars().any(is_unsafe), "{:?} -> {:?}", text, safe);
            let line = terminal_safe_line(&text);
            proptest::prop_assert!(
                !line.chars().any(|c| is_unsafe(c) || c == '\n' || c == '\t'),
                "{:?} -> {:?}", text, line
            );
            // Cleaning is idempotent.
            let again = terminal_safe(&safe).into_owned();
            proptest::prop_assert_eq!(again.as_str(), safe.as_ref());
        }
    }
}
