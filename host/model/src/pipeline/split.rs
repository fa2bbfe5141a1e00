//! Finding a pipeline's `[[phase.task]]` tables in its text, so that each can be read on its own.
//!
//! Read as one document, a 40,000-task pipeline becomes one tree of spanned values in memory
//! before any task is taken from it: most of loading went to building that tree in memory the
//! process had never touched, and to freeing it. Read table by table, each task's table is
//! parsed, deserialised and dropped while the next reuses its memory (3× faster for the TOML at
//! 40,000 tasks). This file only says where the tables are; [`super::raw`] reads them.
//!
//! The tables are found with the TOML crate's own lexer (strings, comments and multi-line values
//! are single tokens there, so a `[` inside them is never taken for a header), and only where
//! the arrangement is plain: a header whose keys are bare, every `phase.task.*` sub-table right
//! after its task, every task after a `[[phase]]`. Anything else, and any problem at all, makes
//! the caller read the text as one document, which is what reports problems: this never changes
//! what a text means or what is said about it (the fuzz target `pipeline` compares both ways).

use std::ops::Range;

use toml_parser::lexer::{Token, TokenKind};

/// A pipeline's text taken apart.
pub(super) struct Split {
    /// The text without its task tables ([`Split::in_source`] maps a span back).
    pub(super) rest: String,
    /// Each piece of `rest` and where it is in the text: `(start in rest, start in the text)`,
    /// in order.
    pieces: Vec<(usize, usize)>,
    /// Each task table in file order.
    pub(super) tasks: Vec<TaskTable>,
    /// How many `[[phase]]` headers the text has.
    pub(super) phases: usize,
}

/// Where one `[[phase.task]]` table is.
pub(super) struct TaskTable {
    /// The index of the `[[phase]]` it belongs to.
    pub(super) phase: usize,
    /// Its header, keys and sub-tables.
    pub(super) range: Range<usize>,
    /// Where its keys start, after the header, when it has no sub-tables: then they can be read
    /// as a document of their own, whose top table is the task's.
    pub(super) keys: Option<usize>,
}

/// What a table header names, as far as the split cares.
#[derive(Debug, PartialEq)]
enum Header {
    /// `[[phase]]`
    Phase,
    /// `[[phase.task]]`
    Task,
    /// `[phase.task.…]` or `[[phase.task.…]]`: part of the task before it.
    InTask,
    /// Any other table.
    Other,
}

/// Where the task tables of `source` are; `None` when the text is not plainly arranged (see
/// the module's documentation), or has no task tables at all.
pub(super) fn split(source: &str) -> Option<Split> {
    let mut tokens = toml_parser::Source::new(source).lex();
    let mut tasks = Vec::new();
    let mut phases = 0usize;
    // The task table being read.
    let mut open: Option<TaskTable> = None;
    // Brackets and braces open in a value: a `[` is a header only at the start of a line and
    // outside any value.
    let mut depth = 0usize;
    let mut line_start = true;
    while let Some(token) = tokens.next() {
        match token.kind() {
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::Newline => line_start = depth == 0,
            TokenKind::Eof => break,
            TokenKind::LeftSquareBracket if line_start => {
                let start = token.span().start();
                let (header, end) = header(&mut tokens, source)?;
                if header != Header::InTask
                    && let Some(mut table) = open.take()
                {
                    table.range.end = start;
                    tasks.push(table);
                }
                match header {
                    Header::Phase => phases += 1,
                    Header::Task => {
                        open = Some(TaskTable {
                            phase: phases.checked_sub(1)?,
                            range: start..source.len(),
                            keys: Some(end),
                        })
                    }
                    Header::InTask => open.as_mut()?.keys = None,
                    Header::Other => {}
                }
                // The header's line was read through its end.
                line_start = true;
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => {
                depth += 1;
                line_start = false;
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.checked_sub(1)?;
                line_start = false;
            }
            _ => line_start = false,
        }
    }
    tasks.extend(open);
    if tasks.is_empty() {
        return None;
    }
    // Each table starts a line and ends where the next table starts (or the text ends), so the
    // text around them joins into TOML of the same meaning, without them.
    let mut rest = String::new();
    let mut pieces = Vec::new();
    let mut kept = 0;
    for at in tasks
        .iter()
        .map(|t| t.range.clone())
        .chain(std::iter::once(source.len()..source.len()))
    {
        if at.start > kept {
            pieces.push((rest.len(), kept));
            rest.push_str(source.get(kept..at.start)?);
        }
        kept = at.end;
    }
    Some(Split {
        rest,
        pieces,
        tasks,
        phases,
    })
}

impl Split {
    /// Where a span of `rest` is in the text. A span that runs across a removed table covers it
    /// there, as it would in the whole text.
    pub(super) fn in_source(&self, span: Range<usize>) -> Range<usize> {
        // The piece a start is in: the last that starts at or before it; an end's, the last
        // that starts before it (an end at a piece's end stays in that piece).
        let start = self.place(
            self.pieces.partition_point(|p| p.0 <= span.start),
            span.start,
        );
        if span.is_empty() {
            return start..start;
        }
        start..self.place(self.pieces.partition_point(|p| p.0 < span.end), span.end)
    }

    /// `at` in `rest`, as far into the piece before `after` (a count of pieces).
    fn place(&self, after: usize, at: usize) -> usize {
        match after.checked_sub(1).map(|i| self.pieces[i]) {
            Some((in_rest, in_source)) => in_source + (at - in_rest),
            None => at,
        }
    }
}

/// Reads a table header after its first `[`, through the end of its line, and says where its
/// closing bracket ends; `None` when it is not a header of bare keys alone on its line.
fn header(tokens: &mut impl Iterator<Item = Token>, source: &str) -> Option<(Header, usize)> {
    // `[[` and `]]` are written together: `[ [` is not an array of tables.
    let mut token = tokens.next()?;
    let array = token.kind() == TokenKind::LeftSquareBracket;
    if array || token.kind() == TokenKind::Whitespace {
        token = past_whitespace(tokens)?;
    }
    // The first three keys tell a header apart; how many there are, the rest.
    let mut keys: [&str; 3] = [""; 3];
    let mut count = 0;
    let mut closing = loop {
        if token.kind() != TokenKind::Atom {
            return None;
        }
        if let Some(key) = keys.get_mut(count) {
            *key = source.get(token.span().start()..token.span().end())?;
        }
        count += 1;
        let after = past_whitespace(tokens)?;
        match after.kind() {
            TokenKind::Dot => token = past_whitespace(tokens)?,
            TokenKind::RightSquareBracket => break after,
            _ => return None,
        }
    };
    if array {
        closing = tokens.next()?;
        if closing.kind() != TokenKind::RightSquareBracket {
            return None;
        }
    }
    // Nothing but a comment may follow on the header's line (a task's keys are read from right
    // after the header, where TOML would not let them start).
    loop {
        match tokens.next()?.kind() {
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::Newline | TokenKind::Eof => break,
            _ => return None,
        }
    }
    let header = match (array, &keys[..count.min(3)]) {
        (true, ["phase"]) => Header::Phase,
        (true, ["phase", "task"]) => Header::Task,
        (_, ["phase", "task", _, ..]) => Header::InTask,
        // `[phase]` or `[phase.task]`: not the arrays a pipeline is made of.
        (false, ["phase"] | ["phase", "task"]) => return None,
        _ => Header::Other,
    };
    Some((header, closing.span().end()))
}

/// The next token that is not whitespace.
fn past_whitespace(tokens: &mut impl Iterator<Item = Token>) -> Option<Token> {
    tokens.find(|t| t.kind() != TokenKind::Whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each task table's text, with its phase and whether its keys are read on their own.
    fn tables(source: &str) -> Option<Vec<(usize, &str, bool)>> {
        let split = split(source)?;
        // Every piece of the rest is the same text in the source.
        for (i, &(in_rest, _)) in split.pieces.iter().enumerate() {
            let end = split.pieces.get(i + 1).map_or(split.rest.len(), |p| p.0);
            let there = split.in_source(in_rest..end);
            assert_eq!(&split.rest[in_rest..end], &source[there]);
        }
        Some(
            split
                .tasks
                .iter()
                .map(|t| (t.phase, &source[t.range.clone()], t.keys.is_some()))
                .collect(),
        )
    }

    #[test]
    fn finds_every_task_table_with_its_sub_tables_and_phase() {
        let source = r#"name = "p"
[[phase]]
id = "a"
[[phase.task]]
id = "x"
input = """
[[phase.task]]
"""
[[phase.task]]   # a comment
id = "y"
config = { list = [
[1], [2],
] }
[phase.task.limits]
memory = "1MiB"
[[phase.task.grants.dirs]]
host = "h"
[phase.gate]
plugin = "g.wasm"
[[phase]]
id = "b"
[[ phase . task ]]
id = "z"
"#;
        let found = tables(source).expect("plainly arranged");
        assert_eq!(found.len(), 3);
        assert_eq!(
            found[0],
            (
                0,
                "[[phase.task]]\nid = \"x\"\ninput = \"\"\"\n[[phase.task]]\n\"\"\"\n",
                true
            )
        );
        assert_eq!(found[1].0, 0);
        assert!(
            found[1]
                .1
                .starts_with("[[phase.task]]   # a comment\nid = \"y\"")
        );
        assert!(found[1].1.ends_with("host = \"h\"\n"), "{:?}", found[1].1);
        assert!(
            !found[1].2,
            "a task with sub-tables is read with its header"
        );
        assert_eq!(found[2], (1, "[[ phase . task ]]\nid = \"z\"\n", true));
        let split = split(source).unwrap();
        assert!(
            split
                .rest
                .contains("[phase.gate]\nplugin = \"g.wasm\"\n[[phase]]\nid = \"b\"")
        );
        assert!(!split.rest.contains("id = \"x\""));
        assert_eq!(split.phases, 2);
    }

    #[test]
    fn anything_not_plainly_arranged_is_left_to_the_whole_document() {
        for source in [
            // No task tables.
            "name = \"p\"\n[[phase]]\nid = \"a\"\n",
            // A task before any phase.
            "[[phase.task]]\nid = \"x\"\n[[phase]]\n",
            // A task's sub-table away from it.
            "[[phase]]\n[[phase.task]]\n[phase.gate]\n[phase.task.limits]\n",
            // Quoted keys, `[ [`, keys after a header, `[phase.task]`.
            "[[phase]]\n[[\"phase\".task]]\n",
            "[[phase]]\n[ [phase.task] ]\n",
            "[[phase]]\n[[phase.task]] id = \"x\"\n",
            "[[phase]]\n[phase.task]\n",
            // A bracket closed that was never opened.
            "[[phase]]\nx = ]\n[[phase.task]]\n",
        ] {
            assert!(tables(source).is_none(), "{source:?}");
        }
    }
}
