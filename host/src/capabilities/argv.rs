//! Commands as argv words, and command grants as argv patterns.
//!
//! Threat: a grant that means more than it says. A glob over shell text (`systemctl status *`)
//! also matches `systemctl status x; id`, and the target's shell then runs both. Here the host
//! splits the task's command into words itself ([`split`]), refusing anything a shell would
//! read as more than words, matches the words against the grant's patterns ([`Pattern`]), and
//! sends the target exactly those words, each single-quoted ([`quote_words`]). What runs is
//! what was matched.
//!
//! # Command syntax (what a task may send)
//! - Words are separated by spaces or tabs.
//! - `'...'` quotes anything but `'` and control characters; `"..."` quotes anything but
//!   `$`, `` ` ``, `\`, `"` and control characters. Quoted and plain parts next to each other
//!   form one word (`a'b c'` is the word `ab c`); `''` is an empty word.
//! - Refused outside quotes: `; & | < > ( ) $ ` \ * ? [ ] { } ~ # !` (so no lists, pipes,
//!   redirections, substitutions, globs, expansions or comments). Refused anywhere: newline,
//!   carriage return, NUL and every other control character except the tab separator.
//! - Refused: an empty command, a first word of the form `NAME=value` (an environment
//!   prefix), a first word that is `sudo` or ends in `/sudo` (sudo is the call's `sudo`
//!   option, which the grant controls), more than [`MAX_WORDS`] words, a word over
//!   [`MAX_WORD_BYTES`] bytes.
//!
//! # Pattern syntax (what a grant allows)
//! A pattern is written like a command, words separated by spaces, and:
//! - a leading word `sudo` means the pattern allows the rest only with `sudo: true`; a pattern
//!   without it allows the command only with `sudo: false`;
//! - a word `*` matches exactly one word; a word containing `*` (e.g. `*.log`, `--unit=*`)
//!   matches one word, each `*` standing for any run of characters; a quoted `'*'` is a
//!   literal star;
//! - a final word `**` matches zero or more remaining words (of any form);
//! - a `*` never matches a word that starts with `-` unless the pattern word itself starts
//!   with `-`, so `tar -czf /backup/x.tgz *` cannot be given `--checkpoint-action=exec=sh`;
//! - every other word matches only itself.
//!
//! Examples: `uptime`; `systemctl status *`; `sudo systemctl restart nginx`;
//! `journalctl -u * -n *`; `sudo apt-get install -y **`; `**` (any command, without sudo).

use std::fmt;

/// Most words in one command or pattern. Bounds matching work and the wire command.
pub const MAX_WORDS: usize = 256;

/// Longest word, in bytes. Bounds glob matching work per word (it is quadratic at worst).
pub const MAX_WORD_BYTES: usize = 4096;

/// Characters a shell treats specially outside quotes; refused there.
const METACHARACTERS: &[char] = &[
    ';', '&', '|', '<', '>', '(', ')', '$', '`', '\\', '*', '?', '[', ']', '{', '}', '~', '#', '!',
];

/// Why a command (or pattern) is not a plain list of words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgvError {
    #[error("the command is empty")]
    Empty,
    #[error(
        "the command contains shell metacharacter '{0}' outside quotes; commands are argv \
         words (quote it to pass it as a literal character; shell syntax needs a raw-shell grant)"
    )]
    Metacharacter(char),
    #[error("the command contains control character {0:?}; one command is one line of words")]
    Control(char),
    #[error("the command contains '{0}' inside double quotes; use single quotes for literal text")]
    DoubleQuoted(char),
    #[error("the command has an unterminated {0} quote")]
    Unterminated(&'static str),
    #[error("the command starts with an environment assignment ('{0}='), which is not allowed")]
    Assignment(String),
    #[error("the command starts with sudo; ask for sudo with the call's sudo option instead")]
    SudoWord,
    #[error("the command has more than {MAX_WORDS} words")]
    TooManyWords,
    #[error("a word of the command is longer than {MAX_WORD_BYTES} bytes")]
    WordTooLong,
}

/// One parsed word: its text, and for each character whether it was quoted.
struct RawWord {
    chars: Vec<(char, bool)>,
}

impl RawWord {
    fn text(&self) -> String {
        self.chars.iter().map(|(c, _)| c).collect()
    }
}

/// Splits `text` into raw words; `allow_star` lets an unquoted `*` through (patterns).
fn lex(text: &str, allow_star: bool) -> Result<Vec<RawWord>, ArgvError> {
    let mut words = Vec::new();
    let mut current: Option<RawWord> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(word) = current.take() {
                    words.push(word);
                }
                continue;
            }
            '\'' | '"' => {
                let word = current.get_or_insert_with(|| RawWord { chars: Vec::new() });
                quoted(&mut chars, c, word)?;
            }
            c if c.is_control() => return Err(ArgvError::Control(c)),
            '*' if allow_star => push(&mut current, c, false),
            c if METACHARACTERS.contains(&c) => return Err(ArgvError::Metacharacter(c)),
            c => push(&mut current, c, false),
        }
        if current
            .as_ref()
            .is_some_and(|w| w.chars.len() > MAX_WORD_BYTES)
        {
            return Err(ArgvError::WordTooLong);
        }
        if words.len() >= MAX_WORDS {
            return Err(ArgvError::TooManyWords);
        }
    }
    words.extend(current);
    if words.len() > MAX_WORDS {
        return Err(ArgvError::TooManyWords);
    }
    if words.iter().any(|w| w.text().len() > MAX_WORD_BYTES) {
        return Err(ArgvError::WordTooLong);
    }
    Ok(words)
}

fn push(current: &mut Option<RawWord>, c: char, quoted: bool) {
    current
        .get_or_insert_with(|| RawWord { chars: Vec::new() })
        .chars
        .push((c, quoted));
}

/// Reads a quoted part up to its closing `quote` into `word`.
fn quoted(
    chars: &mut std::str::Chars<'_>,
    quote: char,
    word: &mut RawWord,
) -> Result<(), ArgvError> {
    let kind = if quote == '\'' { "single" } else { "double" };
    loop {
        let Some(c) = chars.next() else {
            return Err(ArgvError::Unterminated(kind));
        };
        if c == quote {
            return Ok(());
        }
        if c.is_control() {
            return Err(ArgvError::Control(c));
        }
        if quote == '"' && matches!(c, '$' | '`' | '\\') {
            return Err(ArgvError::DoubleQuoted(c));
        }
        word.chars.push((c, true));
        if word.chars.len() > MAX_WORD_BYTES {
            return Err(ArgvError::WordTooLong);
        }
    }
}

/// True for `NAME=...` with a shell variable name before the `=`.
fn is_assignment(word: &str) -> Option<&str> {
    let (name, _) = word.split_once('=')?;
    let mut bytes = name.bytes();
    let first = bytes.next()?;
    let valid = (first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some(name)
}

/// Splits a task's command into argv words (see the module doc for the syntax).
pub fn split(command: &str) -> Result<Vec<String>, ArgvError> {
    let words: Vec<String> = lex(command, false)?.iter().map(RawWord::text).collect();
    let Some(first) = words.first() else {
        return Err(ArgvError::Empty);
    };
    if let Some(name) = is_assignment(first) {
        return Err(ArgvError::Assignment(name.to_string()));
    }
    if first == "sudo" || first.ends_with("/sudo") {
        return Err(ArgvError::SudoWord);
    }
    Ok(words)
}

/// Single-quotes each word for a POSIX shell and joins them with spaces: the shell that
/// reads the result runs exactly `words` as one simple command.
pub fn quote_words(words: &[String]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect();
    quoted.join(" ")
}

/// One piece of a pattern word.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(char),
    Star,
}

/// One word of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternWord {
    /// `*`: exactly one word.
    Any,
    /// A word, with `*` globs inside it (or none).
    Glob(Vec<Piece>),
}

/// A grant's command pattern, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// The pattern starts with `sudo`: it allows the command only under sudo.
    pub sudo: bool,
    words: Vec<PatternWord>,
    /// The pattern ends in `**`.
    rest: bool,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.sudo {
            parts.push("sudo".into());
        }
        for word in &self.words {
            parts.push(match word {
                PatternWord::Any => "*".into(),
                PatternWord::Glob(pieces) => pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Literal(c) => c.to_string(),
                        Piece::Star => "*".into(),
                    })
                    .collect(),
            });
        }
        if self.rest {
            parts.push("**".into());
        }
        f.write_str(&parts.join(" "))
    }
}

impl Pattern {
    /// Parses a pattern (see the module doc). An empty pattern, or one with shell syntax, is
    /// an error; `**` anywhere but last is an error.
    pub fn parse(text: &str) -> Result<Pattern, ArgvError> {
        let mut raw = lex(text, true)?;
        let unquoted = |w: &RawWord, s: &str| w.chars.iter().all(|(_, q)| !q) && w.text() == s;
        let sudo = raw.first().is_some_and(|w| unquoted(w, "sudo"));
        if sudo {
            raw.remove(0);
        }
        let rest = raw.last().is_some_and(|w| unquoted(w, "**"));
        if rest {
            raw.pop();
        }
        if raw.is_empty() && !rest {
            return Err(ArgvError::Empty);
        }
        let mut words = Vec::with_capacity(raw.len());
        for w in &raw {
            if unquoted(w, "**") {
                return Err(ArgvError::Metacharacter('*'));
            }
            words.push(if unquoted(w, "*") {
                PatternWord::Any
            } else {
                let pieces = w
                    .chars
                    .iter()
                    .map(|&(c, q)| match (c, q) {
                        ('*', false) => Piece::Star,
                        (c, _) => Piece::Literal(c),
                    })
                    .collect();
                PatternWord::Glob(pieces)
            });
        }
        Ok(Pattern { sudo, words, rest })
    }

    /// Whether this pattern allows `words` run with or without sudo as `sudo` says.
    pub fn matches(&self, words: &[String], sudo: bool) -> bool {
        if self.sudo != sudo {
            return false;
        }
        let fixed = self.words.len();
        let length_ok = if self.rest {
            words.len() >= fixed
        } else {
            words.len() == fixed
        };
        length_ok
            && self
                .words
                .iter()
                .zip(words)
                .all(|(p, w)| word_matches(p, w))
    }

    /// Whether this pattern allows any command at all under sudo (`sudo **`): the grant a
    /// raw shell under sudo needs.
    pub fn allows_any_sudo(&self) -> bool {
        self.allows_any(true)
    }

    /// Whether this pattern allows any command at all, under sudo or not as `sudo` says
    /// (`**` or `sudo **`).
    pub fn allows_any(&self, sudo: bool) -> bool {
        self.sudo == sudo && self.words.is_empty() && self.rest
    }
}

fn word_matches(pattern: &PatternWord, word: &str) -> bool {
    match pattern {
        PatternWord::Any => !word.starts_with('-'),
        PatternWord::Glob(pieces) => {
            let starts_with_star = pieces.first() == Some(&Piece::Star);
            if starts_with_star && word.starts_with('-') {
                return false;
            }
            glob(pieces, &word.chars().collect::<Vec<_>>())
        }
    }
}

/// `*` matches any run of characters; every other piece matches itself.
fn glob(pattern: &[Piece], text: &[char]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < text.len() {
        match pattern.get(pi) {
            Some(Piece::Star) => {
                backtrack = Some((pi, ti));
                pi += 1;
            }
            Some(Piece::Literal(c)) if *c == text[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    pi = star + 1;
                    ti = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[pi..].iter().all(|p| *p == Piece::Star)
}

#[cfg(test)]
#[path = "argv_tests.rs"]
mod tests;
