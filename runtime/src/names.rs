//! "Did you mean": the likely intended name for a misspelt one, shared by the build's
//! diagnostics (nomnom-codegen) and the api's answers.

/// Levenshtein distance, ASCII case ignored.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(!ca.eq_ignore_ascii_case(cb));
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Whether one name is the other's leading `_`-separated words (`total` and `total_price`).
fn word_prefix(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    !short.is_empty()
        && long.len() > short.len()
        && long.as_bytes()[short.len()] == b'_'
        && long[..short.len()].eq_ignore_ascii_case(short)
}

/// The candidate `word` most likely stands for: the nearest within a typo's distance (about a
/// third of its letters), else one it is the leading words of (`total` → `total_price`).
pub fn closest_name<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1) + 1;
    let mut best_typo: Option<(usize, &'a str)> = None;
    let mut best_prefix: Option<&'a str> = None;
    for c in candidates {
        let d = edit_distance(word, c);
        if d <= limit && best_typo.is_none_or(|(bd, _)| d < bd) {
            best_typo = Some((d, c));
        }
        if word_prefix(word, c) && best_prefix.is_none_or(|b| c.len() < b.len()) {
            best_prefix = Some(c);
        }
    }
    best_typo.map(|(_, c)| c).or(best_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_and_leading_words_find_their_name() {
        let known = ["order_key", "total_price", "order_status", "comment"];
        assert_eq!(closest_name("order_id", known), Some("order_key"));
        assert_eq!(closest_name("total", known), Some("total_price"));
        assert_eq!(closest_name("coment", known), Some("comment"));
        assert_eq!(closest_name("ORDER_KEY", known), Some("order_key"));
        assert_eq!(closest_name("shipping_address", known), None);
        assert_eq!(closest_name("", known), None);
        assert_eq!(closest_name("x", []), None);
    }
}
