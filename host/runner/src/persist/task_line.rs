//! Writes a finished task's journal line as JSON, by hand.
//!
//! Every task of a run is one such line, so its cost is paid per task: `serde_json`'s derived
//! serializer goes through a call per field and escapes strings one character class at a
//! time. The output is the line `serde_json` writes for the same record (a test compares them
//! byte for byte), and the journal is still read with `serde_json`.

use phasegate_model::outcome::{Failure, Usage};
use phasegate_model::progress::TaskState;
use phasegate_model::text::serde_name;

/// Appends `{"phase":…,"task":{…}}` for `task` of phase `phase`, without a newline.
pub(super) fn write(w: &mut Vec<u8>, phase: &str, task: &TaskState) {
    // Destructured, so that a field added to the record cannot be left out of its line unnoticed.
    let TaskState {
        id,
        status,
        attempts,
        duration_ms,
        started_us,
        ended_us,
        output,
        error,
        log,
        worker,
        usage,
        key: task_key,
        cached,
    } = task;
    w.extend_from_slice(b"{\"phase\":");
    string(w, phase);
    w.extend_from_slice(b",\"task\":{\"id\":");
    string(w, id);
    w.extend_from_slice(b",\"status\":\"");
    w.extend_from_slice(status.name().as_bytes());
    w.push(b'"');
    int(w, "attempts", (*attempts).into());
    int(w, "duration-ms", *duration_ms);
    if let Some(us) = started_us {
        int(w, "started-us", *us);
    }
    if let Some(us) = ended_us {
        int(w, "ended-us", *us);
    }
    if let Some(output) = output {
        key(w, "output");
        string(w, output);
    }
    if let Some(Failure { kind, message }) = error {
        key(w, "error");
        w.extend_from_slice(b"{\"kind\":");
        string(w, &serde_name(kind));
        w.extend_from_slice(b",\"message\":");
        string(w, message);
        w.push(b'}');
    }
    if !log.is_empty() {
        key(w, "log");
        w.push(b'[');
        for (i, line) in log.iter().enumerate() {
            if i > 0 {
                w.push(b',');
            }
            string(w, line);
        }
        w.push(b']');
    }
    if let Some(worker) = worker {
        key(w, "worker");
        string(w, worker);
    }
    if let Some(Usage {
        wall_us,
        fuel,
        memory,
        log_bytes,
        written,
        opened,
    }) = usage
    {
        w.extend_from_slice(b",\"usage\":{\"wall-us\":");
        w.extend_from_slice(itoa::Buffer::new().format(*wall_us).as_bytes());
        if let Some(fuel) = fuel {
            int(w, "fuel", *fuel);
        }
        int(w, "memory", *memory);
        int(w, "log-bytes", *log_bytes);
        if *written > 0 {
            int(w, "written", *written);
        }
        if *opened > 0 {
            int(w, "opened", *opened);
        }
        w.push(b'}');
    }
    if let Some(k) = task_key {
        key(w, "key");
        string(w, k);
    }
    if *cached {
        w.extend_from_slice(b",\"cached\":true");
    }
    w.extend_from_slice(b"}}");
}

/// `,"name":`, the name plain (every name here is).
fn key(w: &mut Vec<u8>, name: &str) {
    w.extend_from_slice(b",\"");
    w.extend_from_slice(name.as_bytes());
    w.extend_from_slice(b"\":");
}

fn int(w: &mut Vec<u8>, name: &str, value: u64) {
    key(w, name);
    w.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A JSON string as `serde_json` escapes it: `"` and `\`, control characters (short forms
/// where JSON has one, else `\u00XX` in lower-case hex); everything else as it is.
fn string(w: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    w.push(b'"');
    let bytes = s.as_bytes();
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        w.extend_from_slice(&bytes[plain..i]);
        if short.is_empty() {
            w.extend_from_slice(b"\\u00");
            w.push(HEX[usize::from(b >> 4)]);
            w.push(HEX[usize::from(b & 0xf)]);
        } else {
            w.extend_from_slice(short);
        }
        plain = i + 1;
    }
    w.extend_from_slice(&bytes[plain..]);
    w.push(b'"');
}

#[cfg(test)]
mod tests {
    use phasegate_model::outcome::FailureKind;
    use phasegate_model::progress::TaskStatus;

    use super::*;

    #[test]
    fn a_line_is_what_serde_json_writes() {
        let mut every_byte = String::new();
        for c in (0u8..0x80).map(char::from) {
            every_byte.push(c);
        }
        let done = TaskState {
            id: "t-1".into(),
            status: TaskStatus::Succeeded,
            attempts: 1,
            duration_ms: 12,
            started_us: Some(1_796_603_124_597_269),
            ended_us: Some(u64::MAX),
            output: Some(r#"{"a": "b\"c", "d": [1, 2]}"#.into()),
            error: None,
            log: Vec::new(),
            worker: None,
            usage: Some(Usage {
                wall_us: 158,
                fuel: None,
                memory: 1_114_112,
                log_bytes: 0,
                written: 0,
                opened: 0,
            }),
            key: Some(format!("sha256:{}", "ab".repeat(32))),
            cached: false,
        };
        let failed = TaskState {
            status: TaskStatus::Failed,
            attempts: 3,
            output: None,
            error: Some(Failure {
                kind: FailureKind::InvalidConfig,
                message: format!("ünïcödé \u{1F600}, {every_byte}"),
            }),
            log: vec![
                "info: one".into(),
                every_byte.clone(),
                String::new(),
                "\u{2028}\u{7f}".into(),
            ],
            worker: Some("worker \"w1\"".into()),
            usage: Some(Usage {
                wall_us: 0,
                fuel: Some(0),
                memory: 0,
                log_bytes: 9,
                written: 1,
                opened: 2,
            }),
            ..done.clone()
        };
        let cached = TaskState {
            cached: true,
            usage: None,
            started_us: None,
            ended_us: None,
            ..done.clone()
        };
        for (phase, task) in [
            ("p", &done),
            ("phase \\ \"quoted\"", &failed),
            ("p", &cached),
            ("", &TaskState::pending("")),
        ] {
            let mut line = Vec::new();
            write(&mut line, phase, task);
            let by_serde = serde_json::to_vec(&super::super::TaskLine { phase, task }).unwrap();
            assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(by_serde).unwrap()
            );
        }
    }
}
