//! A TCP proxy between a server process and PostgreSQL that can lose what
//! the database says back, the way a network can:
//!
//! - the acknowledgement of one `COMMIT`: the transaction commits, but the
//!   connection is cut before its answer reaches the service, which cannot
//!   tell whether it did ([`PostgresProxy::cut_next_commit`]);
//! - while told to, everything the database sends to a connection that
//!   listens for notifications, so that the service hears of no change
//!   through them and must rely on what it forgets by itself
//!   ([`PostgresProxy::freeze_notices`]).
//!
//! It reads what the service sends only to recognize two simple queries,
//! `COMMIT` and `LISTEN …`, so the connection through it must not be
//! encrypted: [`PostgresProxy::url`] asks for `sslmode=disable`. Everything
//! else it forwards as it comes, both ways.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::{JoinHandle, JoinSet},
};

/// How long a cut connection waits for the database's answer to `COMMIT`
/// (which it then drops), so that the transaction has committed by the
/// time the service learns the connection is gone.
const COMMIT_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A proxy on a free port of loopback in front of one PostgreSQL server.
/// It stops, closing every connection through it, when dropped.
pub struct PostgresProxy {
    address: SocketAddr,
    upstream_url: String,
    shared: Arc<Shared>,
    accepting: JoinHandle<()>,
}

/// What the proxy's connections share.
struct Shared {
    upstream: SocketAddr,
    /// Armed by [`PostgresProxy::cut_next_commit`]; taken by the first
    /// connection that sends `COMMIT`.
    cut_next_commit: AtomicBool,
    commits_cut: AtomicUsize,
    notices_frozen: watch::Sender<bool>,
    connections: Mutex<JoinSet<()>>,
}

impl PostgresProxy {
    /// Starts a proxy to the server of `database_url`
    /// (`postgres://user@host:port/database`).
    pub async fn start(database_url: &str) -> Self {
        let authority = authority(database_url).expect("a postgres://user@host:port/db URL");
        let upstream = tokio::net::lookup_host(authority)
            .await
            .expect("the database's host resolves")
            .next()
            .expect("the database's host has an address");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Shared {
            upstream,
            cut_next_commit: AtomicBool::new(false),
            commits_cut: AtomicUsize::new(0),
            notices_frozen: watch::Sender::new(false),
            connections: Mutex::new(JoinSet::new()),
        });
        let accepting = tokio::spawn(accept(listener, Arc::clone(&shared)));
        Self {
            address,
            upstream_url: database_url.to_owned(),
            shared,
            accepting,
        }
    }

    /// Where the proxy listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The database URL it was started with, through the proxy instead:
    /// the same user, password and database, unencrypted.
    pub fn url(&self) -> String {
        let authority = authority(&self.upstream_url).expect("checked at start");
        let url = self
            .upstream_url
            .replacen(authority, &self.address.to_string(), 1);
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}sslmode=disable")
    }

    /// The next connection to send `COMMIT` is cut once the database has
    /// answered it, its answer dropped: the transaction commits and the
    /// service never hears so. Armed for one `COMMIT` only.
    pub fn cut_next_commit(&self) {
        self.shared.cut_next_commit.store(true, Ordering::SeqCst);
    }

    /// Whether a `COMMIT` is still to be cut.
    pub fn is_armed(&self) -> bool {
        self.shared.cut_next_commit.load(Ordering::SeqCst)
    }

    /// Disarms [`PostgresProxy::cut_next_commit`] if no `COMMIT` took it.
    pub fn disarm(&self) {
        self.shared.cut_next_commit.store(false, Ordering::SeqCst);
    }

    /// How many connections were cut after a `COMMIT`.
    pub fn commits_cut(&self) -> usize {
        self.shared.commits_cut.load(Ordering::SeqCst)
    }

    /// While frozen, nothing the database sends reaches a connection that
    /// has sent `LISTEN` (its notifications among it); it is held back, in
    /// order, and delivered once thawed.
    pub fn freeze_notices(&self, frozen: bool) {
        self.shared.notices_frozen.send_replace(frozen);
    }
}

impl Drop for PostgresProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        // Dropping the set aborts every connection's task.
        drop(std::mem::take(
            &mut *self.shared.connections.lock().expect("lock"),
        ));
    }
}

/// `host:port` of a `scheme://user@host:port/database` URL.
fn authority(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.contains(':').then_some(host_port)
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let mut connections = shared.connections.lock().expect("lock");
        while connections.try_join_next().is_some() {}
        connections.spawn(relay(client, Arc::clone(&shared)));
    }
}

/// Forwards one connection both ways until either side closes it, or
/// until it is cut after a `COMMIT`.
async fn relay(client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let connection = Connection {
        listens: AtomicBool::new(false),
        cutting: AtomicBool::new(false),
    };
    // Whichever direction ends first ends the connection: dropping every
    // half closes both sockets.
    tokio::select! {
        () = upstream(client_read, server_write, &connection, &shared) => {}
        () = downstream(server_read, client_write, &connection, &shared) => {}
    }
}

/// What the two directions of one connection tell each other.
struct Connection {
    /// It has sent `LISTEN`.
    listens: AtomicBool,
    /// It has sent the `COMMIT` to cut: nothing more goes back.
    cutting: AtomicBool,
}

/// The service's messages, to the database.
async fn upstream(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    connection: &Connection,
    shared: &Shared,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        if is_simple_query(chunk, b"LISTEN ") {
            connection.listens.store(true, Ordering::SeqCst);
        }
        // Decided before forwarding, so that the answer can never slip
        // through.
        let cut = is_simple_query(chunk, b"COMMIT\0")
            && shared.cut_next_commit.swap(false, Ordering::SeqCst);
        if cut {
            connection.cutting.store(true, Ordering::SeqCst);
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
        if cut {
            // The other direction ends the connection once the database
            // has answered.
            std::future::pending::<()>().await;
        }
    }
}

/// The database's messages, to the service.
async fn downstream(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    connection: &Connection,
    shared: &Shared,
) {
    let mut frozen = shared.notices_frozen.subscribe();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if connection.cutting.load(Ordering::SeqCst) {
            // This is the answer to COMMIT (the service sends nothing
            // after it without waiting for it): drop it, and wait for the
            // rest of it if it came in pieces.
            drop_commit_answer(&mut from, &buffer[..n]).await;
            shared.commits_cut.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if connection.listens.load(Ordering::SeqCst) && frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Reads and drops what the database sends until its answer to `COMMIT`
/// is complete (`ReadyForQuery`), the connection ends, or
/// [`COMMIT_ANSWER_WAIT`] has passed.
async fn drop_commit_answer(from: &mut OwnedReadHalf, first: &[u8]) {
    let mut answer = first.to_vec();
    let _ = tokio::time::timeout(COMMIT_ANSWER_WAIT, async {
        let mut buffer = vec![0; 4096];
        while !ends_ready_for_query(&answer) {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
}

/// Whether `chunk` holds a simple-query message (`Q`, a length, the text)
/// whose text starts with `text`. The messages looked for are short and
/// sent on their own, so one chunk holds them whole.
fn is_simple_query(chunk: &[u8], text: &[u8]) -> bool {
    (0..chunk.len())
        .any(|i| chunk[i] == b'Q' && chunk.get(i + 5..).is_some_and(|t| t.starts_with(text)))
}

/// Whether `answer` ends with a `ReadyForQuery` message (`Z`, length 5,
/// the transaction status).
fn ends_ready_for_query(answer: &[u8]) -> bool {
    answer.len() >= 6 && answer[answer.len() - 6..answer.len() - 1] == [b'Z', 0, 0, 0, 5]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_the_host_and_port() {
        for (url, expected) in [
            ("postgres://u@127.0.0.1:5432/test", Some("127.0.0.1:5432")),
            ("postgres://u:p@db:5433/test?x=y", Some("db:5433")),
            ("postgres://u@db/test", None),
        ] {
            assert_eq!(authority(url), expected, "for {url}");
        }
    }

    #[test]
    fn simple_queries_are_recognized_by_their_text() {
        let commit = [b"Q\0\0\0\x0bCOMMIT\0".as_slice()].concat();
        assert!(is_simple_query(&commit, b"COMMIT\0"));
        assert!(!is_simple_query(b"Q\0\0\0\x0aBEGIN\0", b"COMMIT\0"));
        let listen = b"Q\0\0\0\x25LISTEN \"integration_secret_activated\"\0";
        assert!(is_simple_query(listen, b"LISTEN "));
        assert!(ends_ready_for_query(b"C\0\0\0\x0bCOMMIT\0Z\0\0\0\x05I"));
        assert!(!ends_ready_for_query(b"C\0\0\0\x0bCOMMIT\0"));
    }
}
