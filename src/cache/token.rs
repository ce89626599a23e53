//! Generated text (uids, resourceVersions) held without a heap allocation of its own.

/// Text the apiserver generates, held without an allocation of its own when it has the usual
/// form: a uid is a UUID (16 bytes instead of 36 characters on the heap), a resourceVersion etcd's
/// revision as a decimal number. Anything else is kept as it is. Either way it reads back as the
/// exact text it was made from. Every cached child holds three, and 10,000 releases have about
/// 80,000 children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Uuid([u8; 16]),
    Number(u64),
    Text(Box<str>),
}

impl Token {
    pub fn new(text: &str) -> Token {
        Self::uuid(text)
            .map(Token::Uuid)
            .or_else(|| Self::number(text).map(Token::Number))
            .unwrap_or_else(|| Token::Text(text.into()))
    }

    /// A UUID in the lowercase 8-4-4-4-12 form, which is the only one written back.
    fn uuid(text: &str) -> Option<[u8; 16]> {
        let text = text.as_bytes();
        if text.len() != 36 || [8, 13, 18, 23].iter().any(|&i| text[i] != b'-') {
            return None;
        }
        let mut digits = text.iter().filter(|&&c| c != b'-');
        let mut bytes = [0u8; 16];
        for byte in &mut bytes {
            let (high, low) = (digits.next()?, digits.next()?);
            *byte = (Self::hex(*high)? << 4) | Self::hex(*low)?;
        }
        digits.next().is_none().then_some(bytes)
    }

    fn hex(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }

    /// A decimal number without a sign or leading zeros, which is the only one written back.
    fn number(text: &str) -> Option<u64> {
        let canonical = text.bytes().all(|c| c.is_ascii_digit())
            && !text.is_empty()
            && (text == "0" || !text.starts_with('0'));
        canonical.then(|| text.parse().ok()).flatten()
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Uuid(bytes) => {
                for (i, byte) in bytes.iter().enumerate() {
                    if [4, 6, 8, 10].contains(&i) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Token::Number(n) => write!(f, "{n}"),
            Token::Text(text) => f.write_str(text),
        }
    }
}
