//! Dynamic prompts, as the frontend sends a text widget marked `dynamicPrompts` (the prompt of
//! `CLIPTextEncode`): C-style comments (`/* .. */`, `// ..` to the end of the line) removed, and
//! each choice `{a|b|c}` (nested allowed; `\{`, `\}`, `\|` escaped) replaced by one of its
//! options. The frontend picks at random; here the caller's seed picks, so a conversion can be
//! repeated.

/// A small deterministic generator (splitmix64) seeded by the caller.
pub(crate) struct Choices(u64);

impl Choices {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// An index below `n` (`n` > 0).
    fn pick(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % n as u64) as usize
    }
}

/// `text` without its C-style comments. An unterminated `/*` stays.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('/') {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        if let Some(body) = from.strip_prefix("/*")
            && let Some(end) = body.find("*/")
        {
            rest = &body[end + 2..];
            continue;
        }
        if from.starts_with("//") {
            rest = &from[from.find('\n').unwrap_or(from.len())..];
            continue;
        }
        out.push('/');
        rest = &from[1..];
    }
    out.push_str(rest);
    out
}

/// How deeply choices may nest before the rest is kept as it is.
const MAX_NESTING: usize = 64;

/// The text the frontend would send for `text`.
pub(crate) fn process(text: &str, choices: &mut Choices) -> String {
    let text = strip_comments(text);
    let chars: Vec<char> = text.chars().collect();
    let mut at = 0;
    let out = expand(&chars, &mut at, choices, 0);
    unescape(&out)
}

/// Expands the text from `at` to its end (at depth 0) or to the `}` that closes the current
/// choice, whose chosen option is returned expanded.
fn expand(chars: &[char], at: &mut usize, choices: &mut Choices, depth: usize) -> String {
    let mut out = String::new();
    while *at < chars.len() {
        let c = chars[*at];
        *at += 1;
        match c {
            '\\' => {
                out.push('\\');
                if let Some(&next) = chars.get(*at) {
                    out.push(next);
                    *at += 1;
                }
            }
            '{' if depth < MAX_NESTING => out.push_str(&choose(chars, at, choices, depth + 1)),
            c => out.push(c),
        }
    }
    out
}

/// Reads the options of a choice up to its closing `}` and returns one, expanded.
fn choose(chars: &[char], at: &mut usize, choices: &mut Choices, depth: usize) -> String {
    let mut options = Vec::new();
    let mut current = String::new();
    let mut nested = 0usize;
    while *at < chars.len() {
        let c = chars[*at];
        *at += 1;
        match c {
            '\\' => {
                current.push('\\');
                if let Some(&next) = chars.get(*at) {
                    current.push(next);
                    *at += 1;
                }
                continue;
            }
            '{' => nested += 1,
            '}' if nested == 0 => break,
            '}' => nested -= 1,
            '|' if nested == 0 => {
                options.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    options.push(current);
    let chosen: Vec<char> = options
        .swap_remove(choices.pick(options.len()))
        .chars()
        .collect();
    let mut inner = 0;
    expand(&chosen, &mut inner, choices, depth)
}

/// `\{`, `\}` and `\|` become the character; other escapes stay as written.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && matches!(next, '{' | '}' | '|')
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_choices_and_escapes() {
        let mut c = Choices::new(1);
        assert_eq!(
            process("a fox // not this\nin snow", &mut c),
            "a fox \nin snow"
        );
        assert_eq!(process("a /* red */fox", &mut c), "a fox");
        assert_eq!(process("a /* open", &mut c), "a /* open");
        assert_eq!(process("plain text, 1/2", &mut c), "plain text, 1/2");
        assert_eq!(process(r"literal \{a|b\}", &mut c), "literal {a|b}");
        for _ in 0..20 {
            let out = process("a {red|blue|{green|teal}} fox", &mut c);
            assert!(
                ["a red fox", "a blue fox", "a green fox", "a teal fox"].contains(&out.as_str()),
                "{out}"
            );
        }
        // Every option is reachable, and the same seed makes the same choices.
        let seen: std::collections::HashSet<String> = (0..64)
            .map(|s| process("{x|y|z}", &mut Choices::new(s)))
            .collect();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            process("{a|b}{c|d}{e|f}", &mut Choices::new(7)),
            process("{a|b}{c|d}{e|f}", &mut Choices::new(7))
        );
        // Unclosed and deeply nested braces: an answer, not a panic or a stack overflow.
        assert_eq!(process("{a", &mut c), "a");
        let deep = "{".repeat(10_000);
        let _ = process(&deep, &mut c);
    }
}
