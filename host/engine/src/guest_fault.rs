//! What a guest said when it trapped, first: its own message (a Rust panic, a Python exception,
//! a JavaScript error) picked out of its stderr, then the trap as the engine names it. The wasm
//! backtrace is kept out of the message: it goes into the attempt's log (the progress file, and
//! the terminal with `-v`), where the guest's whole stderr already is.

use wasmtime::{Trap, WasmBacktrace};

/// Longest guest message put into a failure's message.
const SAID_MAX: usize = 600;

/// A guest's fault, taken apart.
pub struct GuestFault {
    /// What the guest itself said (the panic message, the exception), if it said anything.
    pub said: Option<String>,
    /// What the engine saw: the trap (`wasm `unreachable` instruction executed`), or the error
    /// without its backtrace ([`backtrace`] gives that).
    pub trap: String,
}

impl GuestFault {
    /// Takes apart `error`, raised while the guest ran, with the guest's captured stderr.
    pub fn of(error: &wasmtime::Error, stderr: &str) -> Self {
        let backtrace = error
            .downcast_ref::<WasmBacktrace>()
            .map(ToString::to_string);
        let trap = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => {
                let mut parts = vec![error.to_string()];
                let mut source = error.source();
                while let Some(s) = source {
                    parts.push(s.to_string());
                    source = s.source();
                }
                parts.retain(|p| Some(p) != backtrace.as_ref());
                parts.dedup();
                parts.join(": ")
            }
        };
        GuestFault {
            said: said(stderr),
            trap,
        }
    }

    /// `said (trap)`, or the trap alone.
    pub fn summary(&self) -> String {
        match &self.said {
            Some(said) => format!("{said} ({})", self.trap),
            None => self.trap.clone(),
        }
    }
}

/// The wasm backtrace of `error` on one line, when the engine captured one.
pub fn backtrace(error: &wasmtime::Error) -> Option<String> {
    error
        .downcast_ref::<WasmBacktrace>()
        .map(|b| one_line(&b.to_string()))
}

/// The guest's own message in its stderr.
fn said(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    // Rust: `thread '…' panicked at src/lib.rs:10:5:`, the message, then `note: run with …`.
    if let Some(i) = lines.iter().position(|l| l.contains(" panicked at ")) {
        let at = lines[i]
            .split_once(" panicked at ")
            .map_or("", |(_, at)| at)
            .trim_end_matches(':');
        let message: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("note: "))
            .map(|l| l.trim())
            .collect();
        let text = if message.is_empty() {
            format!("panicked at {at}")
        } else {
            format!("{} (panicked at {at})", message.join(" "))
        };
        return Some(bounded(text));
    }
    // Python: a traceback ends with `ExceptionType: message` (its one unindented line).
    if let Some(i) = lines
        .iter()
        .rposition(|l| l.starts_with("Traceback (most recent call last)"))
    {
        return lines[i + 1..]
            .iter()
            .rev()
            .find(|l| !l.starts_with(' '))
            .map(|l| bounded(l.to_string()));
    }
    // JavaScript and others: the error last, with its stack indented after it (`Error: boom`,
    // `    at check (app.js:4:11)`); anything the guest printed before comes earlier.
    lines
        .iter()
        .rev()
        .find(|l| !l.starts_with(char::is_whitespace))
        .or(lines.last())
        .map(|l| bounded(l.trim().to_string()))
}

fn bounded(text: String) -> String {
    phasegate_model::text::cut(&text, SAID_MAX).into_owned()
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::said;

    #[test]
    fn the_guests_own_message_is_found_in_each_languages_stderr() {
        let rust = "thread '<unnamed>' panicked at src/lib.rs:138:24:\nhostile plugin panics on purpose\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            said(rust).unwrap(),
            "hostile plugin panics on purpose (panicked at src/lib.rs:138:24)"
        );
        let python = "Traceback (most recent call last):\n  File \"app.py\", line 9, in check\n    raise ValueError(\"no threshold\")\nValueError: no threshold\n";
        assert_eq!(said(python).unwrap(), "ValueError: no threshold");
        let js = "checking 3 outcomes\nError: boom\n    at check (app.js:4:11)\n";
        assert_eq!(said(js).unwrap(), "Error: boom");
        assert_eq!(said("\n  \n"), None);
    }
}
