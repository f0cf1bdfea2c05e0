use super::Invalid;

/// A DNS host name that users are sent to for login, such as
/// `centralauth.com` or `login.example.org`: dot-separated labels of letters,
/// digits and hyphens, stored in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainName(String);

impl DomainName {
    /// The longest host name DNS allows.
    pub const MAX_LEN: usize = 253;

    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let name = value.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(Invalid(format!(
                "a domain name has 1 to {} characters",
                Self::MAX_LEN
            )));
        }
        for label in name.split('.') {
            let well_formed = (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !well_formed {
                return Err(Invalid(format!(
                    "{value:?} is not a domain name: each dot-separated part has 1 to 63 \
                     letters, digits or inner hyphens"
                )));
            }
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The domain an integration's users log in at: its custom domain if it has
/// one, otherwise the service's default. GetIntegration and ValidateClient
/// both answer it.
pub fn login_domain<'a>(custom_domain: Option<&'a str>, default: &'a DomainName) -> &'a str {
    custom_domain.unwrap_or(default.as_str())
}

impl std::str::FromStr for DomainName {
    type Err = Invalid;

    fn from_str(value: &str) -> Result<Self, Invalid> {
        Self::parse(value)
    }
}

impl std::fmt::Display for DomainName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_accepted_in_lower_case() {
        let cases = [
            ("centralauth.com", "centralauth.com"),
            ("Login.Example.ORG.", "login.example.org"),
            ("localhost", "localhost"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                DomainName::parse(input).map(|d| d.0),
                Ok(expected.to_owned()),
                "{input:?}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused() {
        let long_label = format!("{}.com", "a".repeat(64));
        let too_long = ["abcdefghi"; 26].join(".");
        for input in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "https://a.com",
            "a.com/x",
            &long_label,
            &too_long,
        ] {
            assert!(
                DomainName::parse(input).is_err(),
                "{input:?} should be refused"
            );
        }
    }
}
