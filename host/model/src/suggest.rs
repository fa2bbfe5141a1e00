//! "Did you mean": the nearest of the names a misspelt one could have meant.

/// The candidate nearest to `word` when it is near enough to be a likely misspelling (a few
/// edits, or the same once case, `-` and `_` are ignored).
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let folded = fold(word);
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            let distance = if fold(c) == folded {
                0
            } else {
                strsim::damerau_levenshtein(word, c)
            };
            (distance, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)` when a near candidate exists, else nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    nearest(word, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Lists names as `` `a`, `b` ``, at most `max` of them, then `… and N more`.
pub fn list(items: &[&str], max: usize) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    let mut text = items
        .iter()
        .take(max)
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        text.push_str(&format!(" … and {} more", items.len() - max));
    }
    text
}

fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_names_are_suggested_and_far_ones_are_not() {
        let tasks = ["stats", "scan", "report"];
        assert_eq!(nearest("stat", tasks), Some("stats"));
        assert_eq!(
            nearest("text_stats", ["text-stats", "probe"]),
            Some("text-stats")
        );
        assert_eq!(nearest("zzz", tasks), None);
        assert_eq!(list(&["a", "b", "c"], 2), "`a`, `b` … and 1 more");
    }
}
