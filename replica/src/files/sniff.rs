//! What an upload is, decided from its bytes (ARCHITECTURE.md §17): the client's
//! `Content-Type` and file name are claims, not facts, and a file that is
//! not one of the allowed kinds is refused however it is named.
//!
//! Binary kinds by their magic bytes: PNG, JPEG, GIF, WebP, PDF. Text: the
//! whole content is UTF-8 without NUL or other control characters (tab,
//! line feed, carriage return and form feed aside); it is JSON when it
//! parses as JSON, Markdown when the client says so (by name or type:
//! Markdown cannot be told from plain text by its bytes), else plain text.
//! Anything else (executables, archives, office documents, other images)
//! is `None`. Written here rather than taken from a crate: the rules are a
//! dozen lines, and a general sniffer would accept types chatd must refuse.

/// The media types chatd accepts, for messages about refusals.
pub const ALLOWED: &str = "image/png, image/jpeg, image/gif, image/webp, application/pdf, text/plain, text/markdown, application/json";

/// The media type of `content`, or `None` when it is not an allowed kind.
/// `name` and `declared` (the client's file name and type) only choose
/// Markdown among text.
pub fn sniff(content: &[u8], name: &str, declared: Option<&str>) -> Option<&'static str> {
    if let Some(binary) = binary_kind(content) {
        return Some(binary);
    }
    if !is_text(content) {
        return None;
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(content).is_ok() {
        return Some("application/json");
    }
    let lower = name.to_ascii_lowercase();
    let markdown_name = lower.ends_with(".md") || lower.ends_with(".markdown");
    let markdown_type = declared.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/markdown"))
    });
    Some(if markdown_name || markdown_type {
        "text/markdown"
    } else {
        "text/plain"
    })
}

/// Image and PDF signatures.
fn binary_kind(content: &[u8]) -> Option<&'static str> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if content.starts_with(PNG) {
        Some("image/png")
    } else if content.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if content.starts_with(b"GIF87a") || content.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if content.len() >= 12 && &content[..4] == b"RIFF" && &content[8..12] == b"WEBP" {
        Some("image/webp")
    } else if content.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else {
        None
    }
}

/// UTF-8 with no control character but tab, line feed, carriage return
/// and form feed (a UTF-8 byte-order mark is fine).
fn is_text(content: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(content) else {
        return false;
    };
    !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c'))
}

/// The file extension of a media type chatd accepts (for default names).
pub fn extension(media_type: &str) -> &'static str {
    match media_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "application/pdf" => "pdf",
        "application/json" => "json",
        "text/markdown" => "md",
        _ => "txt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_kinds_are_known_by_their_magic_bytes_whatever_the_claim() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff(png, "a.txt", Some("text/plain")), Some("image/png"));
        assert_eq!(
            sniff(b"\xff\xd8\xff\xe0\0\x10JFIF", "x", None),
            Some("image/jpeg")
        );
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0", "x", None), Some("image/gif"));
        assert_eq!(
            sniff(b"RIFF\x24\0\0\0WEBPVP8 ", "x", None),
            Some("image/webp")
        );
        assert_eq!(
            sniff(b"%PDF-1.7\n%\xe2\xe3", "x", None),
            Some("application/pdf")
        );
    }

    #[test]
    fn executables_archives_and_other_binaries_are_refused() {
        assert_eq!(
            sniff(b"\x7fELF\x02\x01\x01\0\0\0", "cat.png", Some("image/png")),
            None
        );
        assert_eq!(sniff(b"MZ\x90\0\x03\0\0\0", "setup.png", None), None);
        assert_eq!(sniff(b"PK\x03\x04\x14\0", "a.json", None), None);
        assert_eq!(sniff(b"RIFF\x24\0\0\0WAVEfmt ", "x", None), None);
        assert_eq!(sniff(b"text with a NUL\0 in it", "a.txt", None), None);
        assert_eq!(sniff(b"\xc3\x28 not utf-8", "a.txt", None), None);
    }

    #[test]
    fn text_is_json_when_it_parses_and_markdown_only_when_the_client_says_so() {
        assert_eq!(
            sniff(b"{\"a\": [1, 2]}\n", "x", None),
            Some("application/json")
        );
        assert_eq!(
            sniff(b"# Title\n\ntext\r\n\ttab", "notes.md", None),
            Some("text/markdown")
        );
        assert_eq!(
            sniff(b"# Title", "notes", Some("text/markdown; charset=utf-8")),
            Some("text/markdown")
        );
        assert_eq!(sniff("héllo\n".as_bytes(), "a", None), Some("text/plain"));
        assert_eq!(sniff(b"{\"a\": 1}", "a.md", None), Some("application/json"));
    }
}
