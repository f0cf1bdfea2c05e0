use std::net::{IpAddr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use super::Invalid;
use super::random::{RandomUnavailable, random_bytes};

/// The host name an organization wants its users to log in at instead of
/// the service's default, such as `login.example.com`: stored as DNS
/// carries it, in lower-case ASCII with internationalized labels in
/// punycode, without the trailing dot.
///
/// It is what a person types into a form, so [`CustomDomainName::parse`]
/// refuses the usual slips (a URL, a port, a space) with a message that
/// says which, rather than storing something no DNS record can be made
/// for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomDomainName(String);

impl CustomDomainName {
    /// The longest name accepted, in ASCII: `_centralauth.` (13 characters)
    /// in front of it must still fit in DNS's 253.
    pub const MAX_LEN: usize = 240;
    /// The longest label (the part between two dots) DNS allows.
    pub const MAX_LABEL_LEN: usize = 63;
    /// The label in front of the name where the verification TXT record
    /// lives. The leading underscore keeps it out of the host names anyone
    /// would use, as for `_dmarc` or `_acme-challenge`.
    pub const VERIFICATION_LABEL: &'static str = "_centralauth";

    /// Accepts a host name of at least two labels, converting Unicode to
    /// punycode and upper case to lower case, and dropping one trailing dot.
    ///
    /// The empty string is refused here too: where it means "no custom
    /// domain", the caller decides so before parsing.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let refuse = |message: &str| Err(Invalid(format!("custom_domain {message}")));
        if value.is_empty() {
            return refuse("must be a hostname such as login.example.com");
        }
        // Before any character rule, so that "::1" is not called a port.
        if looks_like_ip_address(value) {
            return refuse("must be a hostname such as login.example.com, not an IP address");
        }
        if value.contains("://") || value.contains(['/', ':', '@', '?', '#']) {
            return refuse(
                "must be a hostname such as login.example.com, without a scheme, path or port",
            );
        }
        if value.chars().any(char::is_whitespace) {
            return refuse("must not contain spaces");
        }
        // Non-ASCII characters are left to the IDNA conversion below, which
        // knows which of them a domain name may hold.
        if !value
            .bytes()
            .all(|b| !b.is_ascii() || b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return refuse("may contain only letters, digits, hyphens and dots");
        }
        let name = value.strip_suffix('.').unwrap_or(value);
        if name.ends_with('.') {
            return refuse("may end with at most one dot");
        }
        for label in name.split('.') {
            if label.is_empty() {
                return refuse("must not have two dots in a row or start with a dot");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return refuse("must not have a label that starts or ends with a hyphen");
            }
        }

        // UTS #46 with the STD3 rules: the Unicode mapping and punycode, and
        // only what a host name may hold. The lengths are checked after, on
        // the ASCII form that DNS carries, to say which rule was broken.
        let Ok(ascii) = Uts46::new().to_ascii(
            name.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Ignore,
        ) else {
            return refuse("is not a valid internationalized domain name");
        };
        let ascii = ascii.to_ascii_lowercase();

        if ascii.len() > Self::MAX_LEN {
            return Err(Invalid(format!(
                "custom_domain has at most {} characters (counted in punycode)",
                Self::MAX_LEN
            )));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.iter().any(|label| !is_hostname_label(label)) {
            return Err(Invalid(format!(
                "custom_domain must have labels of 1 to {} letters, digits or inner hyphens \
                 (counted in punycode)",
                Self::MAX_LABEL_LEN
            )));
        }
        let [.., _, last] = labels.as_slice() else {
            return refuse("must have at least two labels, such as example.com");
        };
        // A numeric last label is how an IPv4 address in any of its forms
        // ends (192.168.0.1, 3232235521), and no top-level domain is numeric.
        if last.bytes().all(|b| b.is_ascii_digit()) {
            return refuse("must be a hostname such as login.example.com, not an IP address");
        }
        Ok(Self(ascii))
    }

    /// Wraps a value read back from the database, which only ever holds
    /// names made by [`CustomDomainName::parse`].
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name whose TXT record proves control of this domain:
    /// `_centralauth.<name>`.
    pub fn verification_record(&self) -> String {
        format!("{}.{}", Self::VERIFICATION_LABEL, self.0)
    }
}

impl std::fmt::Display for CustomDomainName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IPv4 or IPv6 address, bare or in the brackets of a URL.
fn looks_like_ip_address(value: &str) -> bool {
    value.parse::<IpAddr>().is_ok()
        || value.starts_with('[')
        || value
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|inner| inner.parse::<Ipv6Addr>().is_ok())
}

/// 1 to 63 ASCII letters, digits and hyphens, neither first nor last a hyphen.
fn is_hostname_label(label: &str) -> bool {
    (1..=CustomDomainName::MAX_LABEL_LEN).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// The text an organization publishes in the TXT record at
/// [`CustomDomainName::verification_record`] to prove it controls the
/// domain: 24 bytes (192 bits) from the OS CSPRNG in unpadded base64url,
/// 32 characters.
///
/// The record's text is exactly this code, with no prefix: the record's
/// name already says what it is for. The code is not a secret (anyone can
/// read it from DNS once published) so its `Debug` shows it; what makes it
/// worth something is that nobody else can guess it before it is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationCode(String);

impl VerificationCode {
    /// Random bytes in a code; 32 base64url characters, with no padding.
    const RANDOM_BYTES: usize = 24;

    /// Draws a new code.
    pub fn generate() -> Result<Self, RandomUnavailable> {
        let bytes = random_bytes::<{ Self::RANDOM_BYTES }>()?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Wraps a value read back from the database, which only ever holds
    /// codes made by [`VerificationCode::generate`].
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Result<String, Invalid> {
        CustomDomainName::parse(value).map(|name| name.0)
    }

    /// A host name of `len` characters (more than 192): three labels of 63
    /// letters and a last one of what remains.
    fn name_of_len(len: usize) -> String {
        let name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(len - 3 * 64));
        assert_eq!(name.len(), len, "the test name's length");
        name
    }

    #[test]
    fn host_names_are_accepted_in_lower_case_ascii() {
        let label_63 = format!("{}.example", "a".repeat(63));
        let total_240 = name_of_len(240);
        let cases = [
            ("Login.Example.COM.", "login.example.com"),
            ("login.example.com", "login.example.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.example", "a-b.example"),
            ("r3---sn-abc.example.com", "r3---sn-abc.example.com"),
            ("123.example.com", "123.example.com"),
            (&label_63, &label_63),
            (&total_240, &total_240),
        ];
        for (input, expected) in cases {
            assert_eq!(parsed(input), Ok(expected.to_owned()), "{input:?}");
        }
    }

    #[test]
    fn anything_that_is_not_a_host_name_is_refused() {
        let total_241 = name_of_len(241);
        let label_64 = format!("{}.example", "a".repeat(64));
        // 60 "ü" encode to a punycode label of more than 63 characters.
        let unicode_label_too_long = format!("{}.example", "ü".repeat(60));
        let cases = [
            ("", "must be a hostname"),
            (&total_241, "at most 240 characters"),
            (&label_64, "labels of 1 to 63"),
            (&unicode_label_too_long, "labels of 1 to 63"),
            ("-a.example", "starts or ends with a hyphen"),
            ("a-.example", "starts or ends with a hyphen"),
            ("localhost", "at least two labels"),
            ("localhost.", "at least two labels"),
            ("192.168.0.1", "not an IP address"),
            ("10.0.0.300", "not an IP address"),
            ("example.123", "not an IP address"),
            ("[::1]", "not an IP address"),
            ("::1", "not an IP address"),
            ("2001:db8::1", "not an IP address"),
            (
                "https://login.example.com",
                "without a scheme, path or port",
            ),
            ("login.example.com/path", "without a scheme, path or port"),
            ("login.example.com:443", "without a scheme, path or port"),
            ("user@login.example.com", "without a scheme, path or port"),
            ("login example.com", "must not contain spaces"),
            (" login.example.com", "must not contain spaces"),
            ("login.example.com\n", "must not contain spaces"),
            ("login.example.com\u{a0}", "must not contain spaces"),
            (
                "login_1.example.com",
                "only letters, digits, hyphens and dots",
            ),
            ("login.example.com..", "at most one dot"),
            ("login..example.com", "two dots in a row"),
            (".example.com", "two dots in a row"),
            (".", "two dots in a row"),
            ("login.exa\u{200d}mple.com", "not a valid internationalized"),
            ("a\u{5d0}.example", "not a valid internationalized"),
            ("login.ex\u{ff0f}ample.com", "not a valid internationalized"),
            ("xn--zz.example", "not a valid internationalized"),
        ];
        for (input, expected) in cases {
            match parsed(input) {
                Ok(name) => panic!("{input:?} was accepted as {name:?}"),
                Err(Invalid(message)) => {
                    assert!(
                        message.starts_with("custom_domain "),
                        "{input:?}: {message:?} does not name the field"
                    );
                    assert!(
                        message.contains(expected),
                        "{input:?}: {message:?} does not say {expected:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_verification_record_is_under_centralauth_and_fits_in_dns() {
        let name = CustomDomainName::parse("Login.Example.com").expect("a valid name");
        assert_eq!(name.verification_record(), "_centralauth.login.example.com");
        assert_eq!(name.to_string(), "login.example.com", "Display");

        let longest =
            CustomDomainName::parse(&name_of_len(240)).expect("240 characters are accepted");
        assert!(
            longest.verification_record().len() <= 253,
            "{} characters do not fit in DNS",
            longest.verification_record().len()
        );
    }

    #[test]
    fn verification_codes_are_long_url_safe_and_distinct() {
        let codes: Vec<_> = (0..100)
            .map(|_| VerificationCode::generate().expect("the OS RNG works in tests"))
            .collect();
        for code in &codes {
            let value = code.as_str();
            assert_eq!(value.len(), 32, "24 bytes in unpadded base64url: {value}");
            assert!(value.len() >= 22, "fewer than 128 bits: {value}");
            assert!(
                value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{value} has a character outside base64url"
            );
        }
        let distinct: std::collections::HashSet<_> = codes.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), codes.len(), "two 192-bit codes collided");
    }

    #[test]
    fn stored_values_come_back_as_they_were() {
        let name = CustomDomainName::from_stored("login.example.com".to_owned());
        assert_eq!(name.as_str(), "login.example.com");
        let code = VerificationCode::from_stored("abc".to_owned());
        assert_eq!(code.as_str(), "abc");
    }
}
