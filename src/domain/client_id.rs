use super::random::{self, RandomUnavailable};

/// The public identifier of an organization's OAuth client: 24 base62
/// characters (about 143 bits) from the OS CSPRNG, so it is URL-safe, cannot
/// be guessed or enumerated, and says nothing about the organization.
///
/// It is assigned once, at creation, and never reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    /// Every client ID has exactly this many characters.
    pub const LEN: usize = 24;

    /// Draws a new client ID.
    pub fn generate() -> Result<Self, RandomUnavailable> {
        random::base62(Self::LEN).map(Self)
    }

    /// Recognizes a value of the shape this service issues. Anything else
    /// cannot be a client ID of ours and needs no lookup.
    pub fn parse(value: &str) -> Option<Self> {
        (value.len() == Self::LEN && value.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a value read back from the database, which only ever holds ids
    /// made by [`ClientId::generate`].
    pub(crate) fn from_stored(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_client_id_parses_back() {
        let id = ClientId::generate().expect("the OS RNG works in tests");
        assert_eq!(id.as_str().len(), ClientId::LEN);
        assert_eq!(ClientId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn values_of_another_shape_are_not_client_ids() {
        let too_short = "a".repeat(ClientId::LEN - 1);
        let too_long = "a".repeat(ClientId::LEN + 1);
        let with_dash = format!("{}-", "a".repeat(ClientId::LEN - 1));
        for value in ["", &too_short, &too_long, &with_dash] {
            assert_eq!(ClientId::parse(value), None, "{value:?} is not a client ID");
        }
    }
}
