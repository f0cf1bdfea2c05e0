//! A real DNS server for tests, in the test's process: UDP and TCP on one
//! free port of 127.0.0.1, answering authoritatively from records the test
//! sets, changes and removes while it runs.
//!
//! It is `hickory-server`'s server and catalog over an in-memory zone for
//! the root, so every name is in it: a name without records is NXDOMAIN, a
//! name with records of other types answers NOERROR with no TXT data, both
//! with the zone's SOA, as a real authoritative server would. The zone is
//! rebuilt on each change and swapped in whole, so the test's setters stay
//! plain functions and a query sees the zone before or after a change,
//! never half of it.
//!
//! Every record and the SOA's negative TTL are 300 s: a resolver that
//! cached answers would keep a stale one across a test's change, which is
//! what the tests of `DnsVerifier` need to be able to see.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

/// The TTL of every record, and the negative TTL of the zone.
const TTL: u32 = 300;

/// A DNS server on `127.0.0.1`; dropping it stops it (its tasks belong to
/// the server, which aborts them when dropped).
pub struct TestDns {
    address: SocketAddr,
    zone: Arc<Zone>,
    _server: Server<Handler>,
}

impl TestDns {
    /// Starts a server with no records on a free port, UDP and TCP alike.
    pub async fn start() -> TestDns {
        let (udp, tcp) = bind_udp_and_tcp().await;
        let address = udp.local_addr().unwrap();
        let zone = Arc::new(Zone {
            state: Mutex::new(State {
                records: Vec::new(),
                failing: HashSet::new(),
                serial: 0,
                catalog: Arc::new(Catalog::new()),
            }),
        });
        zone.publish(|_| {});
        let mut server = Server::new(Handler(zone.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 32);
        TestDns {
            address,
            zone,
            _server: server,
        }
    }

    /// Where it listens, UDP and TCP: what `--dns-resolver` takes.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Replaces every TXT record of `name` with one made of `strings`
    /// (each a character-string of at most 255 bytes).
    pub fn set_txt(&self, name: &str, strings: Vec<String>) {
        let name = dns_name(name);
        self.zone.publish(|state| {
            state.forget(&name, Some(RecordType::TXT));
            state.records.push(txt(&name, strings));
        });
    }

    /// Adds a TXT record of `strings` beside those `name` has. A record
    /// equal to one it has is the same record (DNS holds sets).
    pub fn add_txt(&self, name: &str, strings: Vec<String>) {
        let name = dns_name(name);
        self.zone.publish(|state| {
            state.failing.remove(&LowerName::new(&name));
            state.records.push(txt(&name, strings));
        });
    }

    /// Replaces the A record of `name`: a name that exists without TXT data.
    pub fn set_a(&self, name: &str, address: Ipv4Addr) {
        let name = dns_name(name);
        self.zone.publish(|state| {
            state.forget(&name, Some(RecordType::A));
            let record = Record::from_rdata(name.clone(), TTL, RData::A(A(address)));
            state.records.push(record);
        });
    }

    /// Answers SERVFAIL to every query for `name`, as a broken authority
    /// does, until the name is set or removed.
    pub fn servfail(&self, name: &str) {
        let name = dns_name(name);
        self.zone.publish(|state| {
            state.failing.insert(LowerName::new(&name));
        });
    }

    /// Removes every record of `name`: it answers NXDOMAIN again.
    pub fn remove(&self, name: &str) {
        let name = dns_name(name);
        self.zone.publish(|state| state.forget(&name, None));
    }
}

/// The test's records, and the catalog made of them that queries read.
struct Zone {
    state: Mutex<State>,
}

struct State {
    records: Vec<Record>,
    failing: HashSet<LowerName>,
    serial: u32,
    catalog: Arc<Catalog>,
}

impl State {
    /// Drops the records of `name` (of one type, or all) and its SERVFAIL.
    fn forget(&mut self, name: &Name, record_type: Option<RecordType>) {
        self.failing.remove(&LowerName::new(name));
        self.records.retain(|record| {
            record.name != *name || record_type.is_some_and(|t| record.record_type() != t)
        });
    }
}

impl Zone {
    /// Applies `change` and swaps in a catalog of the records it leaves.
    fn publish(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap();
        change(&mut state);
        state.serial += 1;
        let root = Name::root();
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            root.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            Name::from_ascii("ns.test.").unwrap(),
            Name::from_ascii("hostmaster.test.").unwrap(),
            state.serial,
            3_600,
            600,
            86_400,
            TTL,
        );
        assert!(
            zone.upsert_mut(
                Record::from_rdata(root.clone(), TTL, RData::SOA(soa)),
                state.serial
            ),
            "the zone takes its SOA"
        );
        for record in &state.records {
            zone.upsert_mut(record.clone(), state.serial);
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&root), vec![Arc::new(zone)]);
        state.catalog = Arc::new(catalog);
    }
}

/// What the server runs for each query: SERVFAIL for a failing name,
/// otherwise the catalog of the moment.
struct Handler(Arc<Zone>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let (catalog, failing) = {
            let state = self.0.state.lock().unwrap();
            let failing = request
                .queries
                .queries()
                .iter()
                .any(|query| state.failing.contains(query.name()));
            (state.catalog.clone(), failing)
        };
        if !failing {
            return catalog
                .handle_request::<R, T>(request, response_handle)
                .await;
        }
        let response = MessageResponseBuilder::from_message_request(request)
            .error_msg(&request.metadata, ResponseCode::ServFail);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            // The client is gone; the server only logs what it returns.
            Err(_) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// A UDP socket and a TCP listener on the same free port of 127.0.0.1.
async fn bind_udp_and_tcp() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        // The port is free for UDP; TCP may have it in use.
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no port of 127.0.0.1 was free for both UDP and TCP in 50 tries");
}

fn dns_name(name: &str) -> Name {
    let mut name = Name::from_ascii(name)
        .unwrap_or_else(|error| panic!("{name:?} is not a DNS name: {error}"))
        .to_lowercase();
    name.set_fqdn(true);
    name
}

fn txt(name: &Name, strings: Vec<String>) -> Record {
    Record::from_rdata(name.clone(), TTL, RData::TXT(TXT::new(strings)))
}
