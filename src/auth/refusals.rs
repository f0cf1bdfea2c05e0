//! Which refused calls get a log line of their own, and how many were
//! refused.
//!
//! Anyone who reaches the port can send calls without the right token, as
//! fast as the network carries them; a WARN line each would let them fill
//! the disk. So the first refusal of each peer (its IP address, not its
//! port) for each reason in a period gets a line, and every refusal is
//! counted; `crate::startup` reports the counts and ends the period. A
//! persistent offender gets one line per reason per period, plus the
//! report. At most [`FIRST_LINES_PER_PERIOD`] pairs are remembered in a
//! period, so a flood from many addresses costs neither memory nor lines
//! beyond that: past the limit, refusals are only counted.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No `authorization` metadata.
    NoToken,
    /// `authorization` that does not read `Bearer <token>`.
    MalformedAuthorization,
    /// A token that is not one of either role.
    UnknownToken,
    /// A token of the other role.
    WrongRole,
}

impl Reason {
    /// The name logged in the `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoToken => "no_token",
            Self::MalformedAuthorization => "malformed_authorization",
            Self::UnknownToken => "unknown_token",
            Self::WrongRole => "wrong_role",
        }
    }
}

/// How many distinct (peer, reason) pairs get a line of their own in one
/// period: enough for every real misconfigured client, few enough that a
/// flood from many addresses writes a bounded number of lines.
pub const FIRST_LINES_PER_PERIOD: usize = 64;

/// The refusals of one period, shared by every clone: which pairs have had
/// their line, and how many calls were refused. Refusals are not the hot
/// path, so a std `Mutex` held for a set lookup is enough; it is never held
/// across an await.
#[derive(Debug, Clone, Default)]
pub struct RefusalLog {
    period: Arc<Mutex<Period>>,
}

#[derive(Debug, Default)]
struct Period {
    logged: HashSet<(Option<IpAddr>, Reason)>,
    counts: RefusalCounts,
}

/// The calls refused in one period, per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalCounts {
    pub no_token: u64,
    pub malformed_authorization: u64,
    pub unknown_token: u64,
    pub wrong_role: u64,
    /// Of those, the refusals that got no line of their own because the
    /// period's [`FIRST_LINES_PER_PERIOD`] lines had all gone to other
    /// pairs: a sign that the refusals came from many addresses.
    pub past_line_limit: u64,
}

impl RefusalCounts {
    /// Every refused call of the period.
    pub fn total(&self) -> u64 {
        self.no_token + self.malformed_authorization + self.unknown_token + self.wrong_role
    }

    fn count(&mut self, reason: Reason) {
        let counter = match reason {
            Reason::NoToken => &mut self.no_token,
            Reason::MalformedAuthorization => &mut self.malformed_authorization,
            Reason::UnknownToken => &mut self.unknown_token,
            Reason::WrongRole => &mut self.wrong_role,
        };
        *counter += 1;
    }
}

impl RefusalLog {
    /// Counts a refusal of `peer` (`None` if the connection did not say)
    /// for `reason`; true if it is the first of that pair in the period and
    /// the period still has a line to give it.
    pub(super) fn first(&self, peer: Option<IpAddr>, reason: Reason) -> bool {
        // An IPv4 peer on a dual-stack socket is the same peer either way.
        let peer = peer.map(|ip| ip.to_canonical());
        let mut period = self.lock();
        period.counts.count(reason);
        if period.logged.contains(&(peer, reason)) {
            return false;
        }
        if period.logged.len() >= FIRST_LINES_PER_PERIOD {
            period.counts.past_line_limit += 1;
            return false;
        }
        period.logged.insert((peer, reason))
    }

    /// Ends the period: the counts since the last call, and every pair may
    /// have a line again.
    pub fn take(&self) -> RefusalCounts {
        let mut period = self.lock();
        period.logged.clear();
        std::mem::take(&mut period.counts)
    }

    /// The period, even if a thread panicked holding it: a count and a set
    /// cannot be left half-changed in a way that matters.
    fn lock(&self) -> MutexGuard<'_, Period> {
        self.period.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn the_first_refusal_of_each_peer_and_reason_in_a_period_gets_a_line() {
        let log = RefusalLog::default();
        let cases = [
            (ip(1), Reason::NoToken, true, "the peer's first"),
            (ip(1), Reason::NoToken, false, "the same pair again"),
            (ip(1), Reason::UnknownToken, true, "another reason"),
            (ip(2), Reason::NoToken, true, "another peer"),
            (
                None,
                Reason::WrongRole,
                true,
                "a peer the connection did not name",
            ),
            (None, Reason::WrongRole, false, "that unnamed peer again"),
            (
                Some(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped())),
                Reason::NoToken,
                false,
                "the first peer, IPv4-mapped",
            ),
            (
                ip(2),
                Reason::MalformedAuthorization,
                true,
                "a fourth reason",
            ),
        ];
        for (peer, reason, first, case) in cases {
            assert_eq!(log.first(peer, reason), first, "{case}");
        }
        let expected = RefusalCounts {
            no_token: 4,
            malformed_authorization: 1,
            unknown_token: 1,
            wrong_role: 2,
            past_line_limit: 0,
        };
        assert_eq!(log.take(), expected, "every refusal is counted");
        assert_eq!(log.take(), RefusalCounts::default(), "taken");
        assert!(
            log.first(ip(1), Reason::NoToken),
            "a new period gives the pair a line again"
        );
    }

    #[test]
    fn a_period_gives_at_most_its_limit_of_lines_and_counts_the_rest() {
        let log = RefusalLog::default();
        let peers = (0..=u16::MAX)
            .map(|i| Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))));
        let lines = peers
            .clone()
            .take(1_000)
            .filter(|&peer| log.first(peer, Reason::UnknownToken))
            .count();
        assert_eq!(lines, FIRST_LINES_PER_PERIOD, "lines from a thousand peers");
        assert!(
            !log.first(ip(1), Reason::NoToken),
            "a pair never seen gets no line once the period's lines are used"
        );
        let counts = log.take();
        assert_eq!(counts.unknown_token, 1_000, "every refusal is counted");
        assert_eq!(counts.total(), 1_001);
        assert_eq!(
            counts.past_line_limit,
            1_001 - FIRST_LINES_PER_PERIOD as u64,
            "refusals that found the lines used"
        );
        assert_eq!(
            peers
                .take(1_000)
                .filter(|&peer| log.first(peer, Reason::UnknownToken))
                .count(),
            FIRST_LINES_PER_PERIOD,
            "the next period has its own lines"
        );
    }
}
