//! API token secrets: `chatd_` followed by 32 base62 characters. Only their
//! SHA-256 is stored; the first characters are kept to recognise a token in
//! listings.

use rand::Rng;
use sha2::{Digest, Sha256};

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "chatd_";
/// Random characters after the prefix.
pub const TOKEN_RANDOM_LEN: usize = 32;
/// Characters kept (prefix included) to recognise a token.
pub const TOKEN_DISPLAY_LEN: usize = 12;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new random token secret (about 190 bits of entropy).
pub fn generate() -> String {
    format!("{TOKEN_PREFIX}{}", random_base62(TOKEN_RANDOM_LEN))
}

/// `len` random base62 characters (about 5.95 bits each), for secrets.
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect()
}

/// The SHA-256 of a secret, as stored.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The displayable beginning of a secret.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(TOKEN_DISPLAY_LEN).collect()
}

/// True when `secret` has the shape of a token (so malformed ones are
/// refused without a database lookup).
pub fn looks_valid(secret: &str) -> bool {
    secret.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == TOKEN_RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let token = generate();
        assert!(looks_valid(&token), "{token}");
        assert_ne!(generate(), token);
        assert_eq!(hash(&token).len(), 32);
        assert_eq!(display_prefix(&token).len(), 12);
        assert!(!looks_valid("chatd_short"));
        assert!(!looks_valid(&format!("bearer_{}", &token[6..])));
        assert!(!looks_valid(&format!("{}!", &token[..token.len() - 1])));
    }
}
