//! What a client may call a file and how the object is named. A bad name is refused (422), not
//! rewritten: the name the client sees is the name in the bucket.

use sha2::{Digest, Sha256};

/// Cloud Storage allows 1024 bytes per object name; the prefix takes up to ~190 of them.
pub const MAX_NAME_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("fileName is empty")]
    Empty,
    #[error("fileName is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("fileName may not contain '/' or '\\\\'")]
    Separator,
    #[error("fileName may not contain \"..\"")]
    DotDot,
    #[error("fileName may not contain control or invisible formatting characters")]
    Control,
    #[error("fileName may not start or end with whitespace")]
    Whitespace,
}

/// Bidirectional overrides and zero-width characters make `gpj.exe` look like `exe.jpg`.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A client-given file name, accepted as is or refused.
pub fn file_name(name: &str) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    if name.contains(['/', '\\']) {
        return Err(NameError::Separator);
    }
    if name.contains("..") {
        return Err(NameError::DotDot);
    }
    if name.chars().any(|c| c.is_control() || invisible(c)) {
        return Err(NameError::Control);
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(NameError::Whitespace);
    }
    Ok(name)
}

/// The owner's prefix segment: the uid when it is plainly safe in a path, else a digest (a uid
/// may in principle hold `/` or `..`, which must not reach into another user's prefix).
pub fn owner_segment(uid: &str) -> String {
    let plain = !uid.is_empty()
        && uid.len() <= 128
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        uid.to_string()
    } else {
        let digest = Sha256::digest(uid.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("h-{hex}")
    }
}

/// `users/<uid>/<id>/<name>`: the id keeps two uploads of one name apart.
pub fn object_path(uid: &str, id: &str, name: &str) -> String {
    format!("users/{}/{id}/{name}", owner_segment(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass_unchanged() {
        for ok in [
            "a.txt",
            "Résumé 2026.pdf",
            "photo (1).JPG",
            "x",
            "a.b.c",
            "日本.png",
        ] {
            assert_eq!(file_name(ok), Ok(ok));
        }
        assert_eq!(file_name(&"a".repeat(255)), Ok("a".repeat(255).as_str()));
    }

    #[test]
    fn dangerous_names_are_refused_with_the_reason() {
        let cases = [
            ("", NameError::Empty),
            ("..", NameError::DotDot),
            ("a..b", NameError::DotDot),
            ("../etc/passwd", NameError::Separator),
            ("a/b", NameError::Separator),
            ("a\\b", NameError::Separator),
            ("a\nb", NameError::Control),
            ("a\u{0}b", NameError::Control),
            ("a\u{7f}", NameError::Control),
            ("a\u{9b}", NameError::Control),
            ("photo\u{202E}gpj.exe", NameError::Control),
            (" a", NameError::Whitespace),
            ("a ", NameError::Whitespace),
        ];
        for (name, expected) in cases {
            assert_eq!(file_name(name), Err(expected), "{name:?}");
        }
        assert_eq!(file_name(&"é".repeat(128)), Err(NameError::TooLong));
    }

    #[test]
    fn objects_live_under_the_owners_prefix() {
        assert_eq!(object_path("ann", "id1", "a.txt"), "users/ann/id1/a.txt");
        let odd = object_path("../bob", "id1", "a.txt");
        assert!(odd.starts_with("users/h-"), "{odd}");
        assert_eq!(odd.matches('/').count(), 3, "{odd}");
        assert_ne!(owner_segment("a/b"), owner_segment("a_b"));
    }
}
