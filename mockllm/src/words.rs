//! Turning text into streamed pieces, and making up text.

use rand::Rng;
use rand::seq::IndexedRandom;

/// Words random replies are made of: short, plain ASCII, so a reply's word
/// count is its token count and every piece is easy to read in a failing test.
const VOCABULARY: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "chat", "replica", "stream",
    "token", "model", "lease", "relay", "turn", "tool", "result", "answer", "question", "river",
    "stone", "cloud", "light", "paper", "garden", "signal", "window", "orange", "silver",
    "morning", "evening", "simple", "steady", "bright", "quiet", "north", "south", "number",
    "letter", "engine", "planet", "harbor", "forest", "winter", "summer", "little", "large",
    "early", "later", "again", "always", "maybe", "indeed", "here", "there", "and", "with", "from",
    "into", "about", "every", "some", "many",
];

/// Splits `text` into streamed pieces: each starts with the whitespace that
/// precedes a word, so the pieces concatenate back to `text` exactly.
/// Leading whitespace stays with the first word, trailing with the last.
pub(crate) fn pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    // Where the whitespace run before the current character began, if in one.
    let mut space_run: Option<usize> = None;
    let mut seen_word = false;
    for (index, character) in text.char_indices() {
        if character.is_whitespace() {
            space_run.get_or_insert(index);
            continue;
        }
        if let Some(run) = space_run.take()
            && seen_word
        {
            pieces.push(&text[start..run]);
            start = run;
        }
        seen_word = true;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// `count` random words as streamed pieces (`"fox"`, `" jumps"`, …).
pub(crate) fn random_pieces(rng: &mut impl Rng, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| {
            let word = VOCABULARY.choose(rng).copied().unwrap_or("word");
            if index == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

/// A random identifier of `length` base-62 characters, like providers use.
pub(crate) fn random_id(rng: &mut impl Rng, length: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..length)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn pieces_concatenate_to_the_text() {
        for text in [
            "Hello world",
            "  leading and trailing  ",
            "multi\nline\n\ntext\n",
            "one",
            "",
            "   ",
            "héllo  wörld ✓",
        ] {
            assert_eq!(pieces(text).concat(), text, "{text:?}");
        }
    }

    #[test]
    fn each_piece_is_one_word_with_its_leading_whitespace() {
        assert_eq!(pieces("Hello big  world"), vec!["Hello", " big", "  world"]);
        assert_eq!(pieces("  a b "), vec!["  a", " b "]);
    }

    #[test]
    fn random_pieces_are_space_separated_words() {
        let mut rng = StdRng::seed_from_u64(7);
        let text = random_pieces(&mut rng, 5).concat();
        assert_eq!(text.split(' ').count(), 5);
        assert!(!text.starts_with(' '));
    }
}
