//! Errors a person fixes: what is wrong, where (file, line, column in characters) when it is in
//! a file, and what to do. Every crate builds its user-facing errors from these, and the CLI
//! renders them as `error:` and `help:` lines.

use std::fmt;
use std::path::PathBuf;

/// The 1-based line and column (counted in characters, as editors do) of a byte offset in
/// `source`. Every "error at file:line:col" is placed through this one function.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// The line numbers of many offsets in one text: the line starts are found once, and each
/// lookup is a binary search ([`line_col`] scans from the start, which is right for the few
/// offsets of errors and quadratic for one offset per task of a large pipeline).
pub struct LineIndex {
    /// Byte offset of the start of each line after the first.
    starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `source`'s lines.
    pub fn new(source: &str) -> Self {
        LineIndex {
            starts: memchr::memchr_iter(b'\n', source.as_bytes())
                .map(|i| i + 1)
                .collect(),
        }
    }

    /// The 1-based line of a byte offset, as [`line_col`] counts it.
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset) + 1
    }

    /// [`LineIndex::line`], looked for from `last` (where the line looked up before is: 0 at
    /// first) when `offset` is at or after that line's start and not far: a few steps instead
    /// of a search over every line of a large file when offsets come in order.
    pub fn line_after(&self, offset: usize, last: &mut usize) -> usize {
        const NEAR: usize = 32;
        let from = *last;
        let found = if from <= self.starts.len() && (from == 0 || self.starts[from - 1] <= offset) {
            let ahead = &self.starts[from..self.starts.len().min(from + NEAR)];
            let steps = ahead.partition_point(|&start| start <= offset);
            if steps < ahead.len() || ahead.len() < NEAR {
                from + steps
            } else {
                from + self.starts[from..].partition_point(|&start| start <= offset)
            }
        } else {
            self.starts.partition_point(|&start| start <= offset)
        };
        *last = found;
        found + 1
    }
}

/// One problem in a pipeline file, with where it is and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineError {
    /// The pipeline file.
    pub file: PathBuf,
    /// 1-based line (0 when the problem has no place, e.g. an unreadable file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: Option<String>,
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        }
        write_help(f, self.help.as_deref())
    }
}

/// A problem's fix on a line of its own, as the CLI shows it: `\n  help: …`.
fn write_help(f: &mut fmt::Formatter<'_>, help: Option<&str>) -> fmt::Result {
    match help {
        Some(help) => write!(f, "\n  help: {help}"),
        None => Ok(()),
    }
}

/// All problems found in a pipeline file, in file order.
#[derive(Clone, Debug, thiserror::Error)]
pub struct PipelineErrors(pub Vec<PipelineError>);

impl PipelineErrors {
    /// One problem.
    pub fn single(e: PipelineError) -> Self {
        PipelineErrors(vec![e])
    }
}

impl fmt::Display for PipelineErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A TOML file that does not parse into what it should: `FILE:LINE:COL: what serde said`, and
/// `help`. The one place that turns a TOML error into a located problem.
pub fn toml_problem(
    file: &std::path::Path,
    source: &str,
    error: &toml::de::Error,
    help: impl Into<String>,
) -> Problem {
    let place = error
        .span()
        .map(|s| {
            let (line, column) = line_col(source, s.start);
            format!(":{line}:{column}")
        })
        .unwrap_or_default();
    Problem::new(format!(
        "{}{place}: {}",
        file.display(),
        error.message().trim()
    ))
    .help(help)
}

/// Something the user can fix: what is wrong and, when there is one, what to do about it.
///
/// Displayed as the message, then `  help: …` on a line of its own (the CLI prints the first
/// as `error: …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong (may span lines: a list of what was found).
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl Problem {
    /// A problem with no advice (yet).
    pub fn new(message: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            help: None,
        }
    }

    /// The same problem with what to do about it.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl From<String> for Problem {
    fn from(message: String) -> Self {
        Problem::new(message)
    }
}

impl From<&str> for Problem {
    fn from(message: &str) -> Self {
        Problem::new(message)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        write_help(f, self.help.as_deref())
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_looked_up_from_the_last_is_the_line() {
        // Short and long lines, so that lookups step a little and leap far.
        let mut text = String::new();
        for i in 0..500 {
            text.push_str(&"x".repeat(i % 7 * (i % 3)));
            text.push('\n');
            if i % 50 == 0 {
                text.push_str(&"\n".repeat(100));
            }
        }
        let index = LineIndex::new(&text);
        let mut last = 0;
        let forward = (0..=text.len()).step_by(3);
        let back_and_forth = (0..400).map(|i| (i * 7919) % (text.len() + 1));
        for offset in forward.chain(back_and_forth).chain([text.len(), 0]) {
            assert_eq!(
                index.line_after(offset, &mut last),
                index.line(offset),
                "{offset}"
            );
            assert_eq!(index.line(offset), line_col(&text, offset).0);
        }
    }

    #[test]
    fn a_problem_shows_its_help_on_a_line_of_its_own() {
        let p = Problem::new("no lock here").help("run `phasegate lock`");
        assert_eq!(p.to_string(), "no lock here\n  help: run `phasegate lock`");
        assert_eq!(Problem::new("plain").to_string(), "plain");
    }

    #[test]
    fn the_line_index_agrees_with_line_col() {
        let source = "a\nbé\n\nlast line";
        let index = LineIndex::new(source);
        for offset in 0..=source.len() {
            if source.is_char_boundary(offset) {
                assert_eq!(index.line(offset), line_col(source, offset).0, "{offset}");
            }
        }
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let source = "name = \"été\"\nx = 1 # ü\n  bad";
        assert_eq!(line_col(source, 0), (1, 1));
        let bad = source.find("bad").unwrap();
        assert_eq!(line_col(source, bad), (3, 3));
        let comment = source.find('ü').unwrap();
        assert_eq!(line_col(source, comment), (2, 9));
        // Past a multi-byte character, and inside one: still a character column.
        let after = source.find("\"\n").unwrap();
        assert_eq!(line_col(source, after), (1, 12));
        assert_eq!(line_col(source, 9), (1, 9));
        assert_eq!(line_col(source, usize::MAX).0, 3);
    }
}
