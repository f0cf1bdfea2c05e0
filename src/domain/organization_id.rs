use super::Invalid;

/// An organization's id, as the organization service assigns it: 1 to 128
/// printable ASCII characters, no whitespace.
///
/// Because of those rules it is safe to echo in messages and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrganizationId(String);

impl OrganizationId {
    /// The longest id accepted, in characters.
    pub const MAX_LEN: usize = 128;

    /// Accepts `value` if it follows the rules above.
    pub fn parse(value: String) -> Result<Self, Invalid> {
        if value.is_empty() {
            return Err(Invalid("organization_id is required".into()));
        }
        // `!` through `~`: printable ASCII without the space. Checked first, so
        // that the length below counts characters and bytes alike.
        if let Some(position) = value.chars().position(|c| !c.is_ascii_graphic()) {
            return Err(Invalid(format!(
                "organization_id must be printable ASCII without whitespace; \
                 character {} is not",
                position + 1
            )));
        }
        if value.len() > Self::MAX_LEN {
            return Err(Invalid(format!(
                "organization_id must be at most {} characters, not {}",
                Self::MAX_LEN,
                value.len()
            )));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrganizationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids_are_accepted_unchanged() {
        for id in ["a", "org_123", "ACME-corp.eu", "!~", &"x".repeat(128)] {
            let parsed = OrganizationId::parse(id.to_string());
            assert_eq!(
                parsed.as_ref().map(OrganizationId::as_str),
                Ok(id),
                "{id:?} should be accepted"
            );
        }
    }

    #[test]
    fn malformed_ids_are_refused_with_the_rule_they_break() {
        let cases = [
            ("", "required"),
            (&"x".repeat(129) as &str, "at most 128 characters, not 129"),
            ("with space", "character 5 is not"),
            ("tab\there", "character 4 is not"),
            ("new\nline", "character 4 is not"),
            ("nul\0", "character 4 is not"),
            ("del\x7f", "character 4 is not"),
            ("café", "character 4 is not"),
        ];
        for (id, expected) in cases {
            match OrganizationId::parse(id.to_string()) {
                Ok(_) => panic!("{id:?} should be refused"),
                Err(Invalid(message)) => assert!(
                    message.contains(expected),
                    "message for {id:?} was {message:?}, expected it to contain {expected:?}"
                ),
            }
        }
    }

    #[test]
    fn a_huge_id_is_refused_for_its_length() {
        let Err(Invalid(message)) = OrganizationId::parse("x".repeat(1 << 20)) else {
            panic!("a 1 MiB id should be refused");
        };
        assert!(message.contains("not 1048576"), "{message}");
    }
}
