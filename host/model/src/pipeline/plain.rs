//! A task table written plainly, read without the TOML crate: `key = value` lines of the keys
//! `id`, `plugin`, `input`, `config`, `retries`, `reuse`, `timeout` and `cache`, whose values
//! are one-line strings without escapes, whole numbers in decimal, booleans, and a one-line
//! `config = { … }` of those; with blank lines, comments and spaces anywhere TOML allows them.
//! That is how nearly every task table is written, and reading one this way takes a fraction of
//! the TOML crate's time (it builds a document of spanned values for the table, then serde
//! reads the task out of it).
//!
//! Anything else — an escape, a multi-line or `'''` string, a dotted or quoted key, a float, a
//! date, an array, another key, a key written twice, a number out of range, a control
//! character — answers `None`, and the table is read by the TOML crate as before, which also
//! says what is wrong with it. So this reader only has to be right about what it accepts: the
//! same task, spans included, as the TOML crate and serde make of the same text (tests below,
//! and the fuzz target `pipeline`, which compares the file read this way with the file read as
//! one document).

use std::ops::Range;

use toml::Spanned;

use super::raw::RawTask;
use crate::units::HumanDuration;

/// The task whose keys start at `from` (right after its `[[phase.task]]` header's line), if
/// written plainly (see the module's description), and where its keys end: at the first line
/// that starts with `[` (the next table's header; the place of that `[`), or at `to`.
pub(super) fn task(source: &str, from: usize, to: usize) -> Option<(RawTask, usize)> {
    let mut r = Reader {
        source,
        at: from,
        end: to.min(source.len()),
    };
    let mut task = Keys::default();
    loop {
        r.spaces();
        match r.peek() {
            None | Some(b'[') => break,
            Some(b'\n') => {
                r.at += 1;
                continue;
            }
            Some(b'#') => {
                r.comment();
                continue;
            }
            Some(_) => {}
        }
        let key = r.bare_key()?;
        r.spaces();
        r.expect(b'=')?;
        r.spaces();
        match key {
            "id" => set(&mut task.id, r.string()?)?,
            "plugin" => set(&mut task.plugin, r.string()?)?,
            "input" => set(&mut task.input, r.string()?)?,
            "config" => set(&mut task.config, r.inline_table()?)?,
            "retries" => set(&mut task.retries, r.whole::<u32>()?.into_inner())?,
            "reuse" => set(&mut task.reuse, r.whole::<u32>()?)?,
            "timeout" => {
                let text = r.string()?;
                set(
                    &mut task.timeout,
                    HumanDuration::parse(text.get_ref()).ok()?,
                )?
            }
            "cache" => set(&mut task.cache, r.boolean()?)?,
            _ => return None,
        }
        r.spaces();
        if r.peek() == Some(b'#') {
            r.comment();
        }
        match r.peek() {
            None => break,
            Some(b'\n') => r.at += 1,
            Some(_) => return None,
        }
    }
    // Control characters are allowed nowhere but as a tab; a carriage return is left to the
    // TOML crate with the rest. Checked without branches, so that it runs over many bytes at a
    // time (a text of 40,000 tables is mostly their keys).
    let control = source.as_bytes()[from..r.at]
        .iter()
        .fold(false, |found, &c| {
            found | ((c < 0x20) & (c != b'\t') & (c != b'\n')) | (c == 0x7f)
        });
    if control {
        return None;
    }
    let (config, json) = match task.config {
        Some((span, map)) => (
            Some(Spanned::new(span, toml::Table::new())),
            serde_json::Value::Object(map),
        ),
        None => (None, serde_json::Value::Object(Default::default())),
    };
    let task = RawTask {
        id: task.id?,
        plugin: task.plugin?,
        input: task.input,
        config,
        config_json: json.into(),
        retries: task.retries,
        reuse: task.reuse,
        retry_on: None,
        timeout: task.timeout,
        limits: None,
        grants: None,
        cache: task.cache,
    };
    Some((task, r.at))
}

/// The keys read so far.
#[derive(Default)]
struct Keys {
    id: Option<Spanned<String>>,
    plugin: Option<Spanned<String>>,
    input: Option<Spanned<String>>,
    config: Option<(Range<usize>, serde_json::Map<String, serde_json::Value>)>,
    retries: Option<u32>,
    reuse: Option<Spanned<u32>>,
    timeout: Option<HumanDuration>,
    cache: Option<bool>,
}

/// Sets a key not set before (a key written twice is the TOML crate's to report).
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// A place in the text, and where the table's keys end.
struct Reader<'a> {
    source: &'a str,
    at: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.source.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        (self.at < self.end).then(|| self.bytes()[self.at])
    }

    fn spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// Past a comment, to the end of its line.
    fn comment(&mut self) {
        self.at = memchr::memchr(b'\n', &self.bytes()[self.at..self.end])
            .map_or(self.end, |n| self.at + n);
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    /// A bare key: letters, digits, `-` and `_`; not followed by a `.` (a dotted key).
    fn bare_key(&mut self) -> Option<&'a str> {
        let start = self.at;
        while matches!(
            self.peek(),
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_')
        ) {
            self.at += 1;
        }
        if self.at == start || self.peek() == Some(b'.') {
            return None;
        }
        Some(&self.source[start..self.at])
    }

    /// A one-line string: `"…"` without escapes, or `'…'`.
    fn string(&mut self) -> Option<Spanned<String>> {
        let start = self.at;
        let quote = self.peek().filter(|q| matches!(q, b'"' | b'\''))?;
        let rest = &self.bytes()[start + 1..self.end];
        // `"""` and `'''` open multi-line strings.
        if rest.starts_with(&[quote, quote]) {
            return None;
        }
        let close = match quote {
            b'"' => memchr::memchr3(b'"', b'\\', b'\n', rest),
            _ => memchr::memchr2(b'\'', b'\n', rest),
        }
        .filter(|&n| rest[n] == quote)?;
        self.at = start + 1 + close + 1;
        Some(Spanned::new(
            start..self.at,
            self.source[start + 1..start + 1 + close].to_owned(),
        ))
    }

    /// Whether a value ends here: a bare value (number, boolean) must be followed by one of
    /// these, or it is something else (`1.5`, `1979-05-27`, `truex`).
    fn value_ends(&self) -> bool {
        matches!(
            self.peek(),
            None | Some(b' ' | b'\t' | b'\n' | b'#' | b',' | b'}')
        )
    }

    /// A whole number in decimal (`-` allowed, no `+`, `_` or leading zeros), as `T`.
    fn whole<T: TryFrom<i64>>(&mut self) -> Option<Spanned<T>> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let digits = self.at;
        let mut n: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            let d = i64::from(d - b'0');
            n = n.checked_mul(10).and_then(|n| {
                if negative {
                    n.checked_sub(d)
                } else {
                    n.checked_add(d)
                }
            })?;
            self.at += 1;
        }
        let count = self.at - digits;
        if count == 0 || (count > 1 && self.bytes()[digits] == b'0') || !self.value_ends() {
            return None;
        }
        Some(Spanned::new(start..self.at, T::try_from(n).ok()?))
    }

    fn boolean(&mut self) -> Option<bool> {
        let rest = &self.bytes()[self.at..self.end];
        let (value, len) = if rest.starts_with(b"true") {
            (true, 4)
        } else if rest.starts_with(b"false") {
            (false, 5)
        } else {
            return None;
        };
        self.at += len;
        self.value_ends().then_some(value)
    }

    /// A one-line inline table of strings, whole numbers and booleans, as JSON, and its span.
    fn inline_table(
        &mut self,
    ) -> Option<(Range<usize>, serde_json::Map<String, serde_json::Value>)> {
        let start = self.at;
        self.expect(b'{')?;
        let mut map = serde_json::Map::new();
        self.spaces();
        if self.expect(b'}').is_none() {
            loop {
                let key = self.bare_key()?;
                self.spaces();
                self.expect(b'=')?;
                self.spaces();
                let value = match self.peek()? {
                    b'"' | b'\'' => serde_json::Value::String(self.string()?.into_inner()),
                    b't' | b'f' => serde_json::Value::Bool(self.boolean()?),
                    _ => serde_json::Value::from(self.whole::<i64>()?.into_inner()),
                };
                if map.insert(key.to_owned(), value).is_some() {
                    return None;
                }
                self.spaces();
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        self.spaces();
                    }
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        Some((start..self.at, map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the TOML crate and serde make of a task table's keys written at the end of a
    /// header, as the table-by-table reading does.
    fn by_toml(source: &str, keys: usize) -> Option<String> {
        let table = super::super::split::TaskTable {
            phase: 0,
            range: 0..source.len(),
            keys: Some(keys),
        };
        super::super::raw::toml_table(source, &table, &mut |_| {}).map(|t| describe(&t))
    }

    fn describe(t: &RawTask) -> String {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            t.id.span(),
            t.id.get_ref(),
            t.plugin.span(),
            t.plugin.get_ref(),
            t.input.as_ref().map(|i| (i.span(), i.get_ref().clone())),
            t.config.as_ref().map(|c| (c.span(), c.get_ref().clone())),
            t.config_json.lock().map(|c| c.clone()).ok(),
            t.retries,
            t.reuse.as_ref().map(|r| (r.span(), *r.get_ref())),
            t.retry_on,
            t.timeout,
            t.limits,
            t.grants,
            t.cache,
        )
    }

    const HEADER: &str = "[[phase.task]]\n";

    #[test]
    fn a_plain_table_reads_as_the_toml_crate_reads_it() {
        let plain = [
            "id = \"a\"\nplugin = \"p.wasm\"\n",
            "id = \"a\"\nplugin = \"p.wasm\"",
            "id=\"a\"\nplugin='p.wasm'\ninput = 'C:\\no\\escapes \"here\"'\n",
            "  id = \"a\"   # the id\n\n# a comment line\n\tplugin\t=\t\"p.wasm\"\t\n\n\n",
            "id = \"a\"\nplugin = \"p.wasm\"\ninput = \"{{ vars.who }} ünïcödé \u{1F600}\ttab\"\n",
            "id = \"a\"\nplugin = \"p.wasm\"\ninput = \"\"\n",
            "id = \"a\"\nplugin = \"p.wasm\"\nconfig = {}\n",
            "id = \"a\"\nplugin = \"p.wasm\"\nconfig = {   }\n",
            "id = \"a\"\nplugin = \"p.wasm\"\nconfig = { n = 1, label = \"task 1\", on = true, off = false }\n",
            "id = \"a\"\nplugin = \"p.wasm\"\nconfig = {n=-0,m=-17,big=9223372036854775807,small=-9223372036854775808}\n",
            "id = \"a\"\nplugin = \"p.wasm\"\nconfig = { 1 = 'one', a-b_c = \"x\", zz = 0, aa = 'first' }  # sorted\n",
            "id = \"a\"\nplugin = \"p.wasm\"\nretries = 3\nreuse = 10\ncache = false\ntimeout = \"1m 30s\"\n",
            "id = \"a\"\nplugin = \"p.wasm\"\nretries = 0\nreuse = 0\ncache = true\ntimeout = '5s'\n",
            "cache = true\nreuse = 4294967295\nplugin = \"p.wasm\"\nid = \"\"\n",
            "id = \"a\"\nplugin = \"p.wasm\"\n# a last comment without a newline",
        ];
        for keys in plain {
            let source = format!("{HEADER}{keys}");
            let (fast, end) = task(&source, HEADER.len(), source.len())
                .unwrap_or_else(|| panic!("not read plainly: {keys:?}"));
            assert_eq!(end, source.len());
            assert_eq!(
                Some(describe(&fast)),
                by_toml(&source, HEADER.len()),
                "{keys:?}"
            );
        }
    }

    #[test]
    fn the_keys_end_at_the_next_header_or_where_they_are_read_to() {
        let keys = "id = \"a\"  # [not a header]\nplugin = \"p[1].wasm\"\n\n";
        for next in [
            "[[phase.task]]\n",
            "  [phase.task.limits]\n",
            "\t[[phase]]",
            "[",
        ] {
            let source = format!("{HEADER}{keys}{next}id = \"b\"\n");
            let (read, end) = task(&source, HEADER.len(), source.len()).unwrap();
            assert_eq!(read.id.get_ref(), "a");
            assert_eq!(&source[end..end + 1], "[", "{next:?}");
            assert_eq!(end, source.rfind(next).unwrap() + next.find('[').unwrap());
        }
        // Read to a place short of the text's end: the keys end there.
        let source = format!("{HEADER}{keys}retries = 1\n");
        let to = source.find("retries").unwrap();
        assert_eq!(task(&source, HEADER.len(), to).unwrap().1, to);
        assert_eq!(task(&source, HEADER.len(), to).unwrap().0.retries, None);
    }

    #[test]
    fn anything_else_is_left_to_the_toml_crate() {
        let base = "id = \"a\"\nplugin = \"p.wasm\"\n";
        let others = [
            "input = \"with an \\\"escape\\\"\"\n",
            "input = \"\"\"\nmulti-line\"\"\"\n",
            "input = '''literal'''\n",
            "input = \"not closed\n",
            "config.n = 1\n",
            "\"input\" = \"quoted key\"\n",
            "retries = 1.5\n",
            "retries = 1e3\n",
            "retries = 0x10\n",
            "retries = +1\n",
            "retries = 1_0\n",
            "retries = 01\n",
            "retries = -1\n",
            "retries = 4294967296\n",
            "config = { when = 1979-05-27 }\n",
            "config = { n = 99999999999999999999 }\n",
            "config = { list = [1, 2] }\n",
            "config = { inner = { n = 1 } }\n",
            "config = { n = 1, }\n",
            "config = { n = 1,\n m = 2 }\n",
            "config = { n = 1, n = 2 }\n",
            "config = { \"quoted\" = 1 }\n",
            "config = { n = inf }\n",
            "cache = True\n",
            "cache = truely\n",
            "timeout = \"soon\"\n",
            "timeout = 30\n",
            "retry-on = [\"timeout\"]\n",
            "limits = { memory = \"1MiB\" }\n",
            "memroy = 1\n",
            "id = \"twice\"\n",
            "input = \"x\" trailing\n",
            "input = \"carriage\"\r\n",
            "input = \"bell\u{7}\"\n",
            "input = \"delete\u{7f}\"\n",
        ];
        for other in others {
            let source = format!("{HEADER}{base}{other}");
            assert!(
                task(&source, HEADER.len(), source.len()).is_none(),
                "read plainly: {other:?}"
            );
        }
        for missing in ["id = \"a\"\n", "plugin = \"p.wasm\"\n", ""] {
            let source = format!("{HEADER}{missing}");
            assert!(task(&source, HEADER.len(), source.len()).is_none());
        }
    }
}
