//! The TXT look-ups of VerifyDomain: whether `_centralauth.<domain>` holds
//! the code the service issued.
//!
//! [`DnsVerifier`] asks the system's resolvers (`/etc/resolv.conf`) or the
//! one name server `--dns-resolver` names, through `hickory-resolver`.
//!
//! # No caching
//!
//! The resolver keeps no answers, positive or negative. A person who has
//! just created the record presses "verify" and expects it to be seen; a
//! cached "no such name" from a minute earlier (a negative answer lives as
//! long as the zone's SOA says, often an hour) would send them hunting for
//! a mistake they did not make. VerifyDomain is rare and a person waits on
//! it, so a look-up per call costs nothing worth saving. What the upstream
//! resolver caches is out of our hands; an authoritative name server or a
//! resolver that honours low TTLs is the operator's choice.
//!
//! # "No record" versus UNAVAILABLE
//!
//! An answer from DNS that the name does not exist (NXDOMAIN), or exists
//! without TXT data (NOERROR with no answers), is [`TxtLookup::NoRecord`]:
//! the domain is not verified, and the person can act on that. Anything
//! that is not an answer (a timeout, a refused connection, SERVFAIL,
//! REFUSED, a malformed reply) is [`DnsError::Unreachable`]: it says nothing
//! about the record, the service answers UNAVAILABLE, and trying again later
//! may work. Treating a failure as "no record" would tell someone their
//! correct record is wrong.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::system_conf::read_system_conf;

/// The longest a look-up may take, retry included: a person is waiting on
/// the answer, and a name server that has not answered in 5 s is not going
/// to.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries per look-up: one retry covers a lost UDP datagram.
const ATTEMPTS: u32 = 2;

/// Asks DNS for TXT records, freshly each time (see the module doc).
pub struct DnsVerifier {
    resolver: TokioResolver,
    /// Who is asked, for the messages: an address, or the system's list.
    asked: String,
}

/// The resolver could not be set up; the service does not start without it.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS look-ups: {0}")]
pub struct DnsSetupError(String);

/// What DNS answered for a name's TXT records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtLookup {
    /// One string per TXT record, its character-strings joined with nothing
    /// between them (the way SPF and DKIM read a long record), decoded as
    /// UTF-8 with invalid bytes replaced.
    Found(Vec<String>),
    /// The name does not exist, or has no TXT record.
    NoRecord,
}

/// A look-up that got no answer; it says nothing about the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// No usable answer: timeout, refused connection, SERVFAIL, REFUSED.
    /// The service answers UNAVAILABLE; retrying later may work.
    #[error("{0}")]
    Unreachable(String),
    /// The name cannot be asked for at all. The service only asks for names
    /// made by `CustomDomainName::verification_record`, so this is a bug.
    #[error("{0}")]
    InvalidName(String),
}

impl DnsVerifier {
    /// Builds the resolver: `None` reads the system's configuration and
    /// fails (rather than guessing a name server) if it cannot; `Some`
    /// asks that one name server, over UDP and, for long answers, TCP.
    pub fn new(resolver: Option<SocketAddr>) -> Result<Self, DnsSetupError> {
        let (mut builder, asked) = match resolver {
            Some(address) => {
                let server = NameServerConfig::new(
                    address.ip(),
                    true,
                    vec![
                        on_port(ConnectionConfig::udp(), address.port()),
                        on_port(ConnectionConfig::tcp(), address.port()),
                    ],
                );
                let builder = TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                );
                (builder, format!("the DNS resolver {address}"))
            }
            None => {
                let (config, options) = read_system_conf().map_err(|error| {
                    DnsSetupError(format!(
                        "the system's DNS configuration (/etc/resolv.conf) cannot be read \
                         ({error}); name a resolver with --dns-resolver"
                    ))
                })?;
                let asked = system_resolvers(&config);
                let mut builder =
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
                // Its ndots, rotation and the like; timeouts and caching are
                // ours, below.
                *builder.options_mut() = options;
                (builder, asked)
            }
        };
        fresh_answers_only(builder.options_mut());
        let resolver = builder
            .build()
            .map_err(|error| DnsSetupError(format!("{asked}: {error}")))?;
        Ok(Self { resolver, asked })
    }

    /// The TXT records of `name` (a host name, without or with its trailing
    /// dot), asked for as a fully qualified name: no search domain of the
    /// system's configuration is ever appended.
    pub async fn txt(&self, name: &str) -> Result<TxtLookup, DnsError> {
        let mut fqdn = Name::from_ascii(name)
            .map_err(|_| DnsError::InvalidName(format!("{name:?} cannot be looked up in DNS")))?;
        fqdn.set_fqdn(true);

        let lookup =
            match tokio::time::timeout(LOOKUP_TIMEOUT, self.resolver.txt_lookup(fqdn)).await {
                Ok(Ok(lookup)) => lookup,
                Ok(Err(error)) if error.is_no_records_found() => return Ok(TxtLookup::NoRecord),
                Ok(Err(error)) => return Err(self.unreachable(name, &failure(&error))),
                Err(_elapsed) => {
                    let seconds = LOOKUP_TIMEOUT.as_secs();
                    return Err(self.unreachable(name, &format!("no answer within {seconds} s")));
                }
            };
        // A CNAME on the way is followed by the resolver; only TXT data counts.
        let records: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(txt) => Some(String::from_utf8_lossy(&txt.txt_data.concat()).into()),
                _ => None,
            })
            .collect();
        Ok(if records.is_empty() {
            TxtLookup::NoRecord
        } else {
            TxtLookup::Found(records)
        })
    }

    fn unreachable(&self, name: &str, what: &str) -> DnsError {
        DnsError::Unreachable(format!(
            "the TXT look-up of {name} at {} failed: {what}",
            self.asked
        ))
    }
}

/// Options that make every look-up go to the network (see the module doc),
/// and bound it by [`LOOKUP_TIMEOUT`].
fn fresh_answers_only(options: &mut ResolverOpts) {
    // No entries, and any that slipped in expire at once: a positive or
    // negative answer is never served from memory.
    options.cache_size = 0;
    options.positive_min_ttl = None;
    options.negative_min_ttl = None;
    options.positive_max_ttl = Some(Duration::ZERO);
    options.negative_max_ttl = Some(Duration::ZERO);
    // `timeout` bounds each try; hickory's `attempts` counts the retries
    // after the first.
    options.timeout = LOOKUP_TIMEOUT / ATTEMPTS;
    options.attempts = (ATTEMPTS - 1) as usize;
    // /etc/hosts holds addresses, not TXT records.
    options.use_hosts_file = ResolveHosts::Never;
}

fn on_port(mut connection: ConnectionConfig, port: u16) -> ConnectionConfig {
    connection.port = port;
    connection
}

/// "the system's DNS resolvers 10.0.0.2, 10.0.0.3", for the messages.
fn system_resolvers(config: &ResolverConfig) -> String {
    let servers: Vec<String> = config
        .name_servers()
        .iter()
        .map(|server| server.ip.to_string())
        .collect();
    format!("the system's DNS resolvers {}", servers.join(", "))
}

/// What went wrong, in a few words: hickory's own texts, with the response
/// codes people know from `dig`.
fn failure(error: &NetError) -> String {
    match error {
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            format!("it answered {}", response_code_name(u16::from(*code)))
        }
        NetError::Timeout => "no answer in time".to_owned(),
        other => other.to_string(),
    }
}

/// The mnemonic of a DNS response code (RFC 1035, 2136), as `dig` prints it.
fn response_code_name(code: u16) -> String {
    match code {
        1 => "FORMERR".to_owned(),
        2 => "SERVFAIL".to_owned(),
        4 => "NOTIMP".to_owned(),
        5 => "REFUSED".to_owned(),
        9 => "NOTAUTH".to_owned(),
        other => format!("response code {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::ResponseCode;

    #[test]
    fn a_named_resolver_needs_no_runtime_to_be_set_up() {
        let verifier = DnsVerifier::new(Some("127.0.0.1:5353".parse().expect("an address")))
            .expect("a resolver on an address is always set up");
        assert_eq!(verifier.asked, "the DNS resolver 127.0.0.1:5353");
        let options = verifier.resolver.options();
        assert_eq!(options.cache_size, 0, "no cache");
        assert_eq!(options.attempts, 1, "one retry");
        assert_eq!(options.timeout, Duration::from_millis(2_500), "per try");
    }

    #[test]
    fn the_system_configuration_is_read_or_refused_without_a_panic() {
        match DnsVerifier::new(None) {
            Ok(verifier) => assert!(
                verifier.asked.starts_with("the system's DNS resolvers"),
                "{}",
                verifier.asked
            ),
            Err(error) => assert!(
                error.to_string().contains("--dns-resolver"),
                "{error} does not say what to do"
            ),
        }
    }

    #[test]
    fn failures_are_described_with_the_codes_of_dig() {
        let cases = [
            (ResponseCode::ServFail, "it answered SERVFAIL"),
            (ResponseCode::Refused, "it answered REFUSED"),
            (ResponseCode::FormErr, "it answered FORMERR"),
            (ResponseCode::BADCOOKIE, "it answered response code 23"),
        ];
        for (code, expected) in cases {
            let error = NetError::Dns(HickoryDnsError::ResponseCode(code));
            assert_eq!(failure(&error), expected, "{code:?}");
        }
        assert_eq!(failure(&NetError::Timeout), "no answer in time");
    }
}
