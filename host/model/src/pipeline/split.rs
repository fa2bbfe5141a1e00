//! Finding a pipeline's `[[phase.task]]` tables in its text, so that each can be read on its own.
//!
//! Read as one document, a 40,000-task pipeline becomes one tree of spanned values in memory
//! before any task is taken from it: most of loading went to building that tree in memory the
//! process had never touched, and to freeing it. Read table by table, each task's table is
//! parsed, deserialised and dropped while the next reuses its memory (3× faster for the TOML at
//! 40,000 tasks). This file finds the tables and has each read as it is found, by the thread
//! that scans that part of the text: a table written plainly is read by [`super::plain`], which
//! also says where its keys end (the scan goes on from there without lexing them), any other
//! by the reader the caller gives ([`super::raw`]'s, with the TOML crate).
//!
//! The tables are found with the TOML crate's own lexer (strings, comments and multi-line values
//! are single tokens there, so a `[` inside them is never taken for a header), and only where
//! the arrangement is plain: a header whose keys are bare, every `phase.task.*` sub-table right
//! after its task, every task after a `[[phase]]`. Anything else, and any problem at all, makes
//! the caller read the text as one document, which is what reports problems: this never changes
//! what a text means or what is said about it (the fuzz target `pipeline` compares both ways).

use std::ops::Range;

use toml_parser::lexer::{Token, TokenKind};

use super::plain;
use super::raw::{Part, RawTask};

/// A pipeline's text taken apart.
pub(super) struct Split {
    /// The text without its task tables ([`Split::in_source`] maps a span back).
    pub(super) rest: String,
    /// Each piece of `rest` and where it is in the text: `(start in rest, start in the text)`,
    /// in order.
    pieces: Vec<(usize, usize)>,
    /// The tasks as read, in file order, as runs of one phase's consecutive tables (each
    /// thread's share of a phase: moving them into one list per phase would move every task
    /// once more, into memory never touched before).
    pub(super) runs: Vec<Run>,
    /// How many `[[phase]]` headers the text has.
    pub(super) phases: usize,
}

/// Consecutive task tables of one phase, read by one thread.
pub(super) struct Run {
    /// The phase's index.
    pub(super) phase: usize,
    pub(super) tasks: Vec<Part<RawTask>>,
}

/// Reads a task table that is not written plainly; `None` when it does not read cleanly (the
/// whole text is then read as one document, which says why).
pub(super) type ReadTable = fn(&str, &TaskTable) -> Option<RawTask>;

/// Where one `[[phase.task]]` table is.
#[derive(Debug, PartialEq)]
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

/// Where the task tables of `source` are, each read (see the module's documentation); `None`
/// when the text is not plainly arranged, has no task tables at all, or a table does not read
/// cleanly.
pub(super) fn split(source: &str, read: ReadTable) -> Option<Split> {
    let parts = if source.len() >= PARALLEL_SCAN {
        super::loading_threads()
    } else {
        1
    };
    let cuts = cuts(source, parts);
    // Cuts that are not where they were guessed: scanned whole.
    let Scanned {
        tasks,
        runs,
        phases,
    } = scan_in_parts(source, &cuts, read).or_else(|| {
        (!cuts.is_empty())
            .then(|| scan_in_parts(source, &[], read))
            .flatten()
    })?;
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
        runs,
        phases,
    })
}

/// From this size on, the text is scanned in as many parts at once as there are cores.
pub(super) const PARALLEL_SCAN: usize = 512 * 1024;

/// Where to cut `source` into `parts` parts: at a task table's header near each fair share
/// (a guess: whether a cut is one is known only once the part before it is scanned).
fn cuts(source: &str, parts: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = Vec::new();
    for i in 1..parts {
        let from = (source.len() * i / parts).max(cuts.last().map_or(0, |c| c + 1));
        let Some(rest) = source.get(from..) else {
            break;
        };
        match rest.find("\n[[phase.task]]") {
            Some(at) => cuts.push(from + at + 1),
            None => break,
        }
    }
    cuts
}

/// The task tables of `source`, read, and its number of `[[phase]]` headers, scanned as parts
/// that end at `cuts`, each on a thread of its own. `None` when the text is not plainly
/// arranged, a table does not read cleanly, or a cut turns out not to be where a header starts
/// a line outside any value (a `[[` inside a multi-line string): the lexer needs nothing but
/// where it starts, so a part that starts where the part before it reached a header reads what
/// a whole scan would.
fn scan_in_parts(source: &str, cuts: &[usize], read: ReadTable) -> Option<Scanned> {
    let bounds: Vec<(usize, usize)> = std::iter::once(0)
        .chain(cuts.iter().copied())
        .zip(cuts.iter().copied().chain(std::iter::once(source.len())))
        .collect();
    let parts = super::on_threads(&bounds, |(from, to)| scan(source, from, to, read));
    let mut all = Scanned {
        tasks: Vec::new(),
        runs: Vec::new(),
        phases: 0,
    };
    for part in parts {
        let part = part.flatten()?;
        // A task before its part's first `[[phase]]` belongs to the last phase before.
        for mut table in part.tasks {
            table.phase = (all.phases + table.phase).checked_sub(1)?;
            all.tasks.push(table);
        }
        for mut run in part.runs {
            run.phase = (all.phases + run.phase).checked_sub(1)?;
            all.runs.push(run);
        }
        all.phases += part.phases;
    }
    Some(all)
}

/// What one part of the text holds.
struct Scanned {
    /// Its task tables, each with the number of `[[phase]]` headers seen before it in the part
    /// (made an index once the parts are joined).
    tasks: Vec<TaskTable>,
    /// Its tasks as read, in runs numbered as the tables are.
    runs: Vec<Run>,
    /// Its `[[phase]]` headers.
    phases: usize,
}

/// Scans `source[from..to]`, which starts at the text's start or where a header starts a line
/// outside any value, and reads each task table found; `None` when the text is not plainly
/// arranged, a table does not read cleanly, or `to` (before the text's end) is not also such a
/// place.
fn scan(source: &str, from: usize, to: usize, read: ReadTable) -> Option<Scanned> {
    // Where the lexer started: it starts again after a task's keys read plainly.
    let mut base = from;
    let mut tokens = toml_parser::Source::new(source.get(from..)?).lex();
    let mut part = Scanned {
        tasks: Vec::new(),
        runs: Vec::new(),
        phases: 0,
    };
    // The task table being read, and the task when its keys were read plainly.
    let mut open: Option<(TaskTable, Option<RawTask>)> = None;
    // Brackets and braces open in a value: a `[` is a header only at the start of a line and
    // outside any value.
    let mut depth = 0usize;
    let mut line_start = true;
    while let Some(token) = tokens.next() {
        let start = base + token.span().start();
        if start >= to && to < source.len() {
            // The next part's start: reached as the part that starts there assumed, or not.
            let joins = start == to
                && line_start
                && depth == 0
                && token.kind() == TokenKind::LeftSquareBracket;
            if !joins {
                return None;
            }
            break;
        }
        match token.kind() {
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::Newline => line_start = depth == 0,
            TokenKind::Eof => break,
            TokenKind::LeftSquareBracket if line_start => {
                let (header, end) = header(&mut tokens, source.get(base..)?)?;
                let end = base + end;
                if header != Header::InTask
                    && let Some((mut table, task)) = open.take()
                {
                    table.range.end = start;
                    part.close(source, table, task, read)?;
                }
                match header {
                    Header::Phase => part.phases += 1,
                    Header::Task => {
                        let table = TaskTable {
                            phase: part.phases,
                            range: start..to,
                            keys: Some(end),
                        };
                        // Keys written plainly are read here, and the lexer goes on after
                        // them: they hold nothing it would need (no open string or bracket).
                        match plain::task(source, end, to) {
                            Some((task, keys_end)) => {
                                open = Some((table, Some(task)));
                                base = keys_end;
                                tokens = toml_parser::Source::new(source.get(base..)?).lex();
                            }
                            None => open = Some((table, None)),
                        }
                    }
                    Header::InTask => {
                        let (table, task) = open.as_mut()?;
                        table.keys = None;
                        // Read with its sub-tables, by the reader.
                        *task = None;
                    }
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
    if let Some((table, task)) = open {
        part.close(source, table, task, read)?;
    }
    Some(part)
}

impl Scanned {
    /// Adds a task table whose end is known, and its task: `task` when read plainly, else what
    /// `read` makes of the table.
    fn close(
        &mut self,
        source: &str,
        table: TaskTable,
        task: Option<RawTask>,
        read: ReadTable,
    ) -> Option<()> {
        let task = match task {
            Some(task) => task,
            None => read(source, &table)?,
        };
        match self.runs.last_mut() {
            Some(run) if run.phase == table.phase => run.tasks.push(Part::Read(task)),
            _ => self.runs.push(Run {
                phase: table.phase,
                tasks: vec![Part::Read(task)],
            }),
        }
        self.tasks.push(table);
        Some(())
    }
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

    /// Reads any table as a task (whatever its keys) with its range as its id's span: what is
    /// tested here is where the tables are.
    fn any_table(_: &str, table: &TaskTable) -> Option<RawTask> {
        let span = || toml::Spanned::new(table.range.clone(), String::new());
        Some(RawTask {
            id: span(),
            plugin: span(),
            input: None,
            config: None,
            config_json: Default::default(),
            retries: None,
            reuse: None,
            retry_on: None,
            timeout: None,
            limits: None,
            grants: None,
            cache: None,
        })
    }

    /// Each task table's text, with its phase and whether its keys are read on their own.
    fn tables(source: &str) -> Option<Vec<(usize, &str, bool)>> {
        let split = split(source, any_table)?;
        // Every piece of the rest is the same text in the source.
        for (i, &(in_rest, _)) in split.pieces.iter().enumerate() {
            let end = split.pieces.get(i + 1).map_or(split.rest.len(), |p| p.0);
            let there = split.in_source(in_rest..end);
            assert_eq!(&split.rest[in_rest..end], &source[there]);
        }
        let scanned = scan_in_parts(source, &[], any_table)?;
        assert_eq!(read(&scanned).len(), scanned.tasks.len());
        Some(
            scanned
                .tasks
                .iter()
                .map(|t| (t.phase, &source[t.range.clone()], t.keys.is_some()))
                .collect(),
        )
    }

    /// Each task as read, with its phase: its id and the id's span.
    fn read(scanned: &Scanned) -> Vec<(usize, String, std::ops::Range<usize>)> {
        scanned
            .runs
            .iter()
            .flat_map(|run| run.tasks.iter().map(move |t| (run.phase, t)))
            .map(|(phase, t)| match t {
                Part::Read(t) => (phase, t.id.get_ref().clone(), t.id.span()),
                Part::Unreadable { .. } => (phase, "unreadable".into(), 0..0),
            })
            .collect()
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
        let split = split(source, any_table).unwrap();
        assert!(
            split
                .rest
                .contains("[phase.gate]\nplugin = \"g.wasm\"\n[[phase]]\nid = \"b\"")
        );
        assert!(!split.rest.contains("id = \"x\""));
        assert_eq!(split.phases, 2);
    }

    #[test]
    fn a_text_scanned_in_parts_reads_as_scanned_whole() {
        let source = concat!(
            "name = \"p\"\n[[phase]]\nid = \"a\"\n",
            "[[phase.task]]\nid = \"x\"\nplugin = \"p.wasm\"\n",
            // A header's text inside a string: not a place to cut.
            "input = \"\"\"\n[[phase.task]]\nid = 'fake'\n\"\"\"\n",
            "[[phase.task]]\nid = \"y\"\nplugin = \"p.wasm\"\n[phase.task.limits]\nmemory = \"1 MiB\"\n",
            "[[phase]]\nid = \"b\"\n",
            // A `[` starting a line inside a value: not a header.
            "[[phase.task]]\nid = \"z\"\nconfig = { a = [\n[1]] }\nplugin = \"p.wasm\"\n",
            "[[phase.task]]\nid = \"w\"\nplugin = \"p.wasm\"",
        );
        let whole = scan_in_parts(source, &[], any_table).unwrap();
        assert_eq!(whole.tasks.len(), 4);
        assert_eq!(whole.phases, 2);
        // The plainly written ones read as such, the others by the reader given.
        let ids: Vec<String> = read(&whole).into_iter().map(|t| t.1).collect();
        assert_eq!(ids, ["", "", "", "w"]);
        let same = |a: &Scanned, b: &Scanned| {
            a.tasks == b.tasks && a.phases == b.phases && read(a) == read(b)
        };
        let lines: Vec<usize> = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        let headers: Vec<usize> = whole.tasks.iter().map(|t| t.range.start).collect();
        // Every cut and pair of cuts at a line's start: the parts join where a task's header
        // is, and the answer is the whole scan's; anywhere else they do not join.
        for (i, &a) in lines.iter().enumerate().skip(1) {
            let joined = scan_in_parts(source, &[a], any_table);
            assert_eq!(
                joined.is_some(),
                headers.contains(&a) || source[a..].starts_with("[[phase]]"),
                "cut at {a}"
            );
            if let Some(joined) = joined {
                assert!(same(&joined, &whole), "cut at {a}");
            }
            for &b in &lines[i + 1..] {
                if let Some(joined) = scan_in_parts(source, &[a, b], any_table) {
                    assert!(same(&joined, &whole), "cuts at {a} and {b}");
                }
            }
        }
        // The guessed cuts are where a task header's text starts a line, after each fair share.
        for parts in 2..=4 {
            let guessed = cuts(source, parts);
            assert!(!guessed.is_empty() && guessed.is_sorted());
            for (i, cut) in guessed.iter().enumerate() {
                assert!(source[*cut..].starts_with("[[phase.task]]\n"));
                assert!(*cut > source.len() * (i + 1) / parts);
            }
        }
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
