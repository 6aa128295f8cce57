use std::fmt;

/// An org id: 1–64 characters of `A-Z a-z 0-9 . _ -` (so it is safe inside the
/// `o:<orgId>` part of a signature header).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrgId(String);

impl OrgId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "org id {raw:?} must be 1-64 characters of letters, digits, '.', '_' or '-'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
