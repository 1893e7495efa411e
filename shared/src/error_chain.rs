//! Errors on one line with all their causes, for logs and CLI messages.

use std::{error::Error, fmt};

/// Displays an error followed by its sources, `: `-separated, on one line.
/// A source whose text the message above it already contains is skipped
/// (some libraries print their cause in their own message, some do not).
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::new();
        let mut next: Option<&(dyn Error + 'static)> = Some(self.0);
        while let Some(err) = next {
            let text = err.to_string().replace('\n', " ");
            if !line.contains(&text) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&text);
            }
            next = err.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error, bool);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.1 {
                write!(f, "connecting: {}", self.0)
            } else {
                f.write_str("connecting")
            }
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_are_joined_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            Chain(&Outer(refused(), false)).to_string(),
            "connecting: refused"
        );
        assert_eq!(
            Chain(&Outer(refused(), true)).to_string(),
            "connecting: refused"
        );
    }
}
