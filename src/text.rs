//! Text made safe for where it is stored or sent: PostgreSQL `text` cannot hold NUL, a NATS
//! header value cannot hold a line break. Imports nothing of ours.

use std::borrow::Cow;

/// `text` without NUL characters (each becomes U+FFFD), for PostgreSQL `text` columns.
pub fn printable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `text` as one NATS header value of at most `max_bytes` bytes: control characters become
/// spaces (line breaks would end the header), and a longer text is cut at a character boundary
/// with a note of how much was left out.
pub fn header_value(text: &str, max_bytes: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() <= max_bytes {
        return clean;
    }
    let note_room = 40.min(max_bytes);
    let mut cut = max_bytes - note_room;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} more bytes)", &clean[..cut], clean.len() - cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_and_other_text_borrowed() {
        assert_eq!(printable("a\0b"), "a\u{FFFD}b");
        assert!(matches!(printable("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn header_values_have_no_line_breaks_and_keep_their_bound() {
        assert_eq!(header_value("a\r\nb\0c", 100), "a  b c");
        let long = "é".repeat(1000);
        let cut = header_value(&long, 200);
        assert!(cut.len() <= 200, "{}", cut.len());
        assert!(cut.ends_with("more bytes)"), "{cut}");
    }
}
