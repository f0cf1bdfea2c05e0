//! Who may call what.
//!
//! A caller presents a bearer token in the `authorization` metadata. Each
//! token belongs to one role: **admin** (the dashboard backend: every change
//! and read) or **validator** (the gateway: ValidateClient and the change
//! stream, [`VALIDATOR_METHODS`]).
//! The service keeps only the tokens' SHA-256 digests, and checks a
//! presented token against every digest of both roles, in constant time, so
//! neither the answer's time nor its path depends on how much of a token
//! was right. A token is a high-entropy random string, not a password: a
//! fast hash is what fits here (argon2 on every call would cost the hot
//! path what the credential cache saves).
//!
//! The check wraps the IntegrationService only: health and reflection stay
//! open, as load balancers and people with `grpcurl` expect.
//!
//! A refused call is logged at WARN only if it is the first of its peer and
//! reason in a period; the rest are counted and reported ([`refusals`]), so
//! that a flood of refused calls cannot flood the log.

pub mod refusals;

pub use refusals::{Reason, RefusalCounts, RefusalLog};

use std::{
    convert::Infallible,
    fmt,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tonic::{
    Status,
    body::Body,
    server::NamedService,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::Service;
use tracing::{debug, warn};

/// What a token lets its holder call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The dashboard backend: every RPC but the validator's.
    Admin,
    /// The gateway: ValidateClient and WatchIntegrations.
    Validator,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Validator => "validator",
        }
    }
}

/// Who a call's token says the caller is: its role, and the first four bytes
/// of the token's SHA-256 digest (shown as hex: `admin:1a2b3c4d`), which tell
/// an operator which configured token it was
/// (`printf %s "$TOKEN" | sha256sum | cut -c1-8`) and say nothing a guesser
/// can use. Authentication leaves it in the request's extensions; the audit
/// trail records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    fingerprint: [u8; 4],
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.role.as_str())?;
        self.fingerprint
            .iter()
            .try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// Shortest token accepted: 32 characters of a random string carry well
/// over 128 bits whatever the alphabet a generator uses.
pub const MIN_TOKEN_CHARS: usize = 32;

/// A bearer token as configured. Only its digest survives [`Tokens::new`];
/// it has no `Debug` that shows it.
pub struct Token(String);

impl Token {
    /// Checks that `value` can be sent as metadata and is long enough to be
    /// unguessable. The message never repeats the value.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.chars().count() < MIN_TOKEN_CHARS {
            return Err(format!(
                "a token is shorter than {MIN_TOKEN_CHARS} characters; generate tokens with, \
                 for example, `openssl rand -hex 32`"
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "a token contains whitespace, control or non-ASCII characters, which cannot \
                 travel in gRPC metadata"
                    .into(),
            );
        }
        Ok(Self(value.to_owned()))
    }

    /// Tokens from a file's or a variable's text: one per line, or separated
    /// by commas or spaces; blank lines and lines starting with `#` are
    /// ignored.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .flat_map(|line| line.split([',', ' ', '\t']))
            .filter(|token| !token.is_empty())
            .map(Self::parse)
            .collect()
    }

    fn digest(&self) -> [u8; 32] {
        digest(self.0.as_bytes())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The tokens of both roles, as digests.
#[derive(Clone, Default)]
pub struct Tokens {
    admin: Vec<[u8; 32]>,
    validator: Vec<[u8; 32]>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("admin", &self.admin.len())
            .field("validator", &self.validator.len())
            .finish()
    }
}

impl Tokens {
    /// Refuses a token given to both roles: the roles exist so that the
    /// gateway's token cannot change secrets.
    pub fn new(admin: &[Token], validator: &[Token]) -> Result<Self, String> {
        let admin: Vec<_> = admin.iter().map(Token::digest).collect();
        let validator: Vec<_> = validator.iter().map(Token::digest).collect();
        if admin.iter().any(|a| validator.contains(a)) {
            return Err(
                "the same token is configured for the admin and the validator role; give each \
                 role its own tokens"
                    .into(),
            );
        }
        Ok(Self { admin, validator })
    }

    /// No token at all: authentication is off.
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.validator.is_empty()
    }

    /// How many tokens each role has (admin, validator).
    pub fn counts(&self) -> (usize, usize) {
        (self.admin.len(), self.validator.len())
    }

    /// The caller holding `presented`, if it is a configured token. Every
    /// digest is compared, whichever matches.
    fn caller(&self, presented: &[u8]) -> Option<Caller> {
        let digest = digest(presented);
        let role = self.role_of_digest(&digest)?;
        let mut fingerprint = [0; 4];
        fingerprint.copy_from_slice(&digest[..4]);
        Some(Caller { role, fingerprint })
    }

    #[cfg(test)]
    fn role_of(&self, presented: &[u8]) -> Option<Role> {
        self.caller(presented).map(|caller| caller.role)
    }

    fn role_of_digest(&self, presented: &[u8; 32]) -> Option<Role> {
        let matches = |digests: &[[u8; 32]]| {
            digests
                .iter()
                .fold(Choice::from(0), |found, d| found | d.ct_eq(presented))
        };
        let (admin, validator) = (matches(&self.admin), matches(&self.validator));
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(validator) {
            Some(Role::Validator)
        } else {
            None
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Wraps a gRPC service so that each call needs a token of the role its
/// method requires.
#[derive(Clone)]
pub struct RequireRole<S> {
    inner: S,
    tokens: Arc<Tokens>,
    /// The methods validators may call, as request paths.
    validator_paths: Arc<[String]>,
    /// Those of them that admins may call too.
    shared_paths: Arc<[String]>,
    /// Counts refusals and says which get a line of their own.
    refusals: RefusalLog,
}

/// The IntegrationService's methods that need the validator role (the
/// gateway's); every other method needs admin.
pub const VALIDATOR_METHODS: [&str; 2] = ["ValidateClient", "WatchIntegrations"];

/// The validator's methods that an admin token may call too: the change
/// stream serves the dashboard as well as the gateway.
pub const SHARED_METHODS: [&str; 1] = ["WatchIntegrations"];

impl<S: NamedService> RequireRole<S> {
    /// `validator_methods` (e.g. [`VALIDATOR_METHODS`]) need the validator
    /// role, or the admin role too for those also in `shared_methods`
    /// ([`SHARED_METHODS`]); every other method of the service needs admin.
    /// Refusals are counted in `refusals`, whose owner reports them and ends
    /// its periods.
    pub fn new(
        inner: S,
        tokens: Arc<Tokens>,
        validator_methods: &[&str],
        shared_methods: &[&str],
        refusals: RefusalLog,
    ) -> Self {
        let paths = |methods: &[&str]| {
            methods
                .iter()
                .map(|method| format!("/{}/{method}", S::NAME))
                .collect()
        };
        Self {
            inner,
            tokens,
            validator_paths: paths(validator_methods),
            shared_paths: paths(shared_methods),
            refusals,
        }
    }
}

impl<S> RequireRole<S> {
    fn required(&self, path: &str) -> Role {
        if self.validator_paths.iter().any(|p| p == path) {
            Role::Validator
        } else {
            Role::Admin
        }
    }

    /// Whether `held` may call `path`, which needs `required`.
    fn allows(&self, path: &str, required: Role, held: Role) -> bool {
        held == required || (held == Role::Admin && self.shared_paths.iter().any(|p| p == path))
    }

    /// The caller's role, or the status that refuses it. A refusal is
    /// logged at WARN if it is the first of its peer and reason in the
    /// period, at DEBUG otherwise, and counted either way.
    fn authorize<B>(&self, request: &Request<B>) -> Result<Caller, Status> {
        let path = request.uri().path();
        let required = self.required(path);
        let refuse = |status: Status, reason: Reason, held: Option<Role>| {
            let peer = peer(request);
            let first = self.refusals.first(peer.map(|p| p.ip()), reason);
            macro_rules! refused {
                ($event:ident) => {
                    $event!(
                        rpc = path.rsplit('/').next().unwrap_or_default(),
                        peer = peer.map(tracing::field::display),
                        reason = reason.as_str(),
                        held_role = held.map(Role::as_str),
                        required_role = required.as_str(),
                        "call refused"
                    )
                };
            }
            if first {
                refused!(warn);
            } else {
                refused!(debug);
            }
            status
        };
        let Some(header) = request.headers().get(http::header::AUTHORIZATION) else {
            return Err(refuse(
                Status::unauthenticated(
                    "this call needs a token: send `authorization: Bearer <token>` metadata",
                ),
                Reason::NoToken,
                None,
            ));
        };
        let token = bearer(header.as_bytes()).ok_or_else(|| {
            refuse(
                Status::unauthenticated(
                    "the authorization metadata must read `Bearer <token>` (RFC 6750)",
                ),
                Reason::MalformedAuthorization,
                None,
            )
        })?;
        match self.tokens.caller(token) {
            None => Err(refuse(
                Status::unauthenticated("the token is not one this service accepts"),
                Reason::UnknownToken,
                None,
            )),
            Some(caller) if !self.allows(path, required, caller.role) => Err(refuse(
                Status::permission_denied(format!(
                    "this call needs a token of the {} role; the token sent has the {} role",
                    required.as_str(),
                    caller.role.as_str()
                )),
                Reason::WrongRole,
                Some(caller.role),
            )),
            Some(caller) => Ok(caller),
        }
    }
}

/// The token of a `Bearer <token>` header value; the scheme is
/// case-insensitive (RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

/// The address the call came from, with or without TLS.
fn peer<B>(request: &Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

impl<S, B> Service<Request<B>> for RequireRole<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Response<Body>, Infallible>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.authorize(&request) {
            Ok(caller) => {
                // For the audit trail.
                request.extensions_mut().insert(caller);
                futures_util::future::Either::Right(self.inner.call(request))
            }
            Err(status) => {
                futures_util::future::Either::Left(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

impl<S: NamedService> NamedService for RequireRole<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(c: char) -> Token {
        Token::parse(&c.to_string().repeat(40)).expect("a valid token")
    }

    #[test]
    fn short_tokens_and_tokens_that_cannot_travel_as_metadata_are_refused() {
        for bad in ["Xq7-tok", &"é".repeat(40), &format!("{} x", "a".repeat(40))] {
            let message = Token::parse(bad).expect_err("refused");
            assert!(!message.contains(bad), "the message repeats the token");
        }
    }

    #[test]
    fn token_lists_take_lines_commas_and_comments() {
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        let c = "c".repeat(32);
        let text = format!("# rotated 2026-11\n{a}\n\n  {b}, {c}\n");
        assert_eq!(Token::parse_list(&text).expect("parsed").len(), 3);
        assert!(Token::parse_list("").expect("parsed").is_empty());
    }

    #[test]
    fn each_token_has_its_role_and_others_have_none() {
        let tokens = Tokens::new(&[token('a')], &[token('v'), token('w')]).expect("distinct");
        assert_eq!(tokens.role_of(&[b'a'; 40]), Some(Role::Admin));
        assert_eq!(tokens.role_of(&[b'w'; 40]), Some(Role::Validator));
        assert_eq!(tokens.role_of(&[b'a'; 39]), None);
        assert_eq!(tokens.role_of(b""), None);
    }

    #[test]
    fn one_token_cannot_hold_both_roles() {
        assert!(Tokens::new(&[token('a')], &[token('a')]).is_err());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"abc"), None);
    }

    /// A service that only has a name: `authorize` never calls it.
    struct Named;

    impl NamedService for Named {
        const NAME: &'static str = "test.Service";
    }

    #[test]
    fn each_refusal_keeps_its_status_and_is_counted_under_its_reason() {
        let tokens = Tokens::new(&[token('a')], &[token('v')]).expect("distinct");
        let log = RefusalLog::default();
        let guard = RequireRole::new(
            Named,
            Arc::new(tokens),
            &["Check", "Watch"],
            &["Watch"],
            log.clone(),
        );
        let call = |method: &str, authorization: Option<String>| {
            let mut request = Request::builder().uri(format!("/test.Service/{method}"));
            if let Some(value) = authorization {
                request = request.header(http::header::AUTHORIZATION, value);
            }
            guard.authorize(&request.body(()).expect("a request"))
        };
        let cases = [
            (None, tonic::Code::Unauthenticated),
            (Some("Basic aaaa".to_owned()), tonic::Code::Unauthenticated),
            (
                Some(format!("Bearer {}", "x".repeat(40))),
                tonic::Code::Unauthenticated,
            ),
            (
                Some(format!("Bearer {}", "v".repeat(40))),
                tonic::Code::PermissionDenied,
            ),
        ];
        for _ in 0..3 {
            for (authorization, code) in &cases {
                let refused = call("Change", authorization.clone()).expect_err("refused");
                assert_eq!(refused.code(), *code, "{}", refused.message());
            }
        }
        call("Change", Some(format!("Bearer {}", "a".repeat(40)))).expect("admin may");
        let validator =
            call("Check", Some(format!("Bearer {}", "v".repeat(40)))).expect("validator may");
        assert_eq!(validator.role, Role::Validator);
        call("Watch", Some(format!("Bearer {}", "v".repeat(40)))).expect("validator may");
        let admin = call("Watch", Some(format!("Bearer {}", "a".repeat(40)))).expect("admin may");
        assert_eq!(
            admin.to_string(),
            format!("admin:{}", &hex(&digest(&[b'a'; 40]))[..8]),
            "the caller is its role and the start of its token's digest"
        );
        let refused = call("Check", Some(format!("Bearer {}", "a".repeat(40))))
            .expect_err("admin may not validate");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let expected = RefusalCounts {
            no_token: 3,
            malformed_authorization: 3,
            unknown_token: 3,
            wrong_role: 4,
            past_line_limit: 0,
        };
        assert_eq!(log.take(), expected, "refusals only, each under its reason");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let shown = format!("{:?} {:?}", token('z'), Tokens::new(&[token('z')], &[]));
        assert!(!shown.contains("zzzz"), "{shown}");
    }
}
