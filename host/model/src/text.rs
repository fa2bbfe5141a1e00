//! Text as phasegate shows it: an enum's name as serde writes it, text cut to a length.

use std::borrow::Cow;

/// An enum's name as serde writes it (`complete`, `fail`, `invalid-output`); empty for a value
/// that does not serialise to a string.
pub fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// `text` cut to at most `max` characters, with `…` where it was cut.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]).into(),
        None => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_cuts() {
        assert_eq!(
            serde_name(&crate::outcome::FailureKind::InvalidOutput),
            "invalid-output"
        );
        assert_eq!(cut("héllo", 2), "hé…");
        assert!(matches!(cut("héllo", 5), Cow::Borrowed("héllo")));
    }
}
