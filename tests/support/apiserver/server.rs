//! Sockets and threads: the acceptor thread (polls a non-blocking listener, drops it while
//! the server is "down" and binds the same port again when it comes back) and one thread per
//! TLS connection reading requests until the client closes. Every connection's socket is
//! registered so `go_down` and `stop` can shut them all, which wakes any blocked read or
//! write at once.

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::faults::Faults;
use super::http::{read_request, write_response, ReadError, Response};
use super::router;
use super::status::ApiError;
use super::store::Store;
use super::tls::Pki;
use super::ApiServerConfig;

/// A TLS connection as request handlers see it.
pub type Conn = StreamOwned<ServerConnection, TcpStream>;

/// How often the acceptor polls for connections and state changes.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// An idle keep-alive connection is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that does not take a response within this is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait in `go_down` / `come_back` for the acceptor to act.
const STATE_CHANGE_WAIT: Duration = Duration::from_secs(5);

/// State shared by the test thread, the acceptor and the connection threads.
pub struct Shared {
    /// Settings.
    pub config: ApiServerConfig,
    /// The objects.
    pub store: Store,
    /// Fault injection controls.
    pub faults: Faults,
    /// Certificates, and the users of client certificates.
    pub pki: Pki,
    tls: Arc<ServerConfig>,
    /// The address, kept across `go_down` / `come_back`.
    pub addr: SocketAddr,
    /// Tokens issued by `serviceaccounts/{name}/token`.
    pub tokens_issued: AtomicU64,
    /// TokenReview and SubjectAccessReview answers.
    pub reviews: super::kubelet::Reviews,
    /// Requests per (verb, resource).
    counts: Mutex<HashMap<(String, String), u64>>,
    /// A clone of every open connection's socket, to shut them down from outside.
    conns: Mutex<HashMap<u64, TcpStream>>,
    /// Connection threads, joined on stop.
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_conn: AtomicU64,
    stopping: AtomicBool,
    down: AtomicBool,
    /// Whether the acceptor holds a bound listener (what `go_down` / `come_back` wait for).
    listening: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Shared state for a server about to listen on `addr`.
    pub fn new(
        config: ApiServerConfig,
        pki: Pki,
        tls: Arc<ServerConfig>,
        addr: SocketAddr,
    ) -> Shared {
        Shared {
            store: Store::new(config.event_window),
            config,
            faults: Faults::default(),
            pki,
            tls,
            addr,
            tokens_issued: AtomicU64::new(0),
            reviews: super::kubelet::Reviews::default(),
            counts: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            down: AtomicBool::new(false),
            listening: AtomicBool::new(true),
        }
    }

    /// Whether streams should end now (stopping or down).
    pub fn is_closing(&self) -> bool {
        self.stopping.load(Ordering::SeqCst) || self.down.load(Ordering::SeqCst)
    }

    /// Counts one request.
    pub fn count_request(&self, verb: &str, resource: &str) {
        *lock(&self.counts)
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }

    /// Requests counted for (verb, resource).
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        let counts = lock(&self.counts);
        counts
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn drop_connections(&self) {
        for socket in lock(&self.conns).values() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.store.poke();
    }

    fn wait_listening(&self, wanted: bool) {
        let deadline = Instant::now() + STATE_CHANGE_WAIT;
        while self.listening.load(Ordering::SeqCst) != wanted && Instant::now() < deadline {
            thread::sleep(ACCEPT_POLL);
        }
    }

    /// Stops listening and drops every connection.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.drop_connections();
        self.wait_listening(false);
    }

    /// Listens again on the same port.
    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
        self.wait_listening(true);
    }

    /// First half of stop: no new work, every connection shut.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.drop_connections();
    }

    /// Second half of stop, after the acceptor has ended: joins the connection threads.
    pub fn join_connections(&self) {
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        for handle in threads {
            let _ = handle.join();
        }
    }
}

/// Starts the acceptor thread on `listener`.
pub fn spawn_acceptor(shared: Arc<Shared>, listener: TcpListener) -> JoinHandle<()> {
    thread::Builder::new()
        .name("apiserver-accept".into())
        .spawn(move || accept_loop(&shared, listener))
        .expect("spawn the acceptor thread")
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    let mut listener = listener.set_nonblocking(true).ok().map(|()| listener);
    while !shared.stopping.load(Ordering::SeqCst) {
        if shared.down.load(Ordering::SeqCst) {
            listener = None;
            shared.listening.store(false, Ordering::SeqCst);
            thread::sleep(ACCEPT_POLL);
            continue;
        }
        let Some(bound) = &listener else {
            // Coming back: the port is ours again unless something grabbed it meanwhile.
            listener = TcpListener::bind(shared.addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .ok();
            shared.listening.store(listener.is_some(), Ordering::SeqCst);
            if listener.is_none() {
                thread::sleep(ACCEPT_POLL);
            }
            continue;
        };
        match bound.accept() {
            Ok((socket, _)) => spawn_connection(shared, socket),
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) => {
                log::warn!("apiserver double: accept failed: {e}");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
    shared.listening.store(false, Ordering::SeqCst);
}

fn spawn_connection(shared: &Arc<Shared>, socket: TcpStream) {
    let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
    {
        let mut conns = lock(&shared.conns);
        if conns.len() >= shared.config.max_connections {
            log::warn!("apiserver double: connection limit reached, closing a new connection");
            return;
        }
        match socket.try_clone() {
            Ok(clone) => conns.insert(id, clone),
            Err(_) => return,
        };
    }
    let worker = shared.clone();
    let spawned = thread::Builder::new()
        .name(format!("apiserver-conn-{id}"))
        .spawn(move || {
            serve_connection(&worker, socket);
            lock(&worker.conns).remove(&id);
        });
    let mut threads = lock(&shared.threads);
    threads.retain(|t| !t.is_finished());
    match spawned {
        Ok(handle) => threads.push(handle),
        Err(e) => {
            log::warn!("apiserver double: cannot spawn a connection thread: {e}");
            lock(&shared.conns).remove(&id);
        }
    }
}

/// Serves one connection: the TLS handshake, then requests until the client closes, a
/// handler asks to close, or the server goes down.
fn serve_connection(shared: &Shared, socket: TcpStream) {
    let _ = socket.set_nonblocking(false);
    let _ = socket.set_nodelay(true);
    let _ = socket.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = socket.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(tls) = ServerConnection::new(shared.tls.clone()) else {
        return;
    };
    let mut conn = StreamOwned::new(tls, socket);
    while conn.conn.is_handshaking() {
        if let Err(e) = conn.conn.complete_io(&mut conn.sock) {
            log::debug!("apiserver double: TLS handshake failed: {e}");
            return;
        }
    }
    let user = conn
        .conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| shared.pki.user_of(cert));
    let mut buf = Vec::new();
    loop {
        let request = match read_request(&mut conn, &mut buf) {
            Ok(request) => request,
            Err(ReadError::Closed | ReadError::Io(_)) => break,
            Err(ReadError::Malformed(why)) => {
                let response = Response::error(&ApiError::bad_request(why));
                let _ = write_response(&mut conn, &response, false);
                break;
            }
        };
        match router::handle(shared, &request, user.as_deref(), &mut conn) {
            Ok(true) if request.keep_alive && !shared.is_closing() => {}
            _ => break,
        }
    }
    conn.conn.send_close_notify();
    let _ = conn.flush();
}
