//! The connection side of the kubelet API's HTTP server: one `accept` thread holds each new
//! connection until it sends its first bytes (a connection that never does is closed at the
//! head deadline, having cost a file descriptor but no thread), then hands it to an elastic,
//! bounded pool of handler threads, which run the TLS handshake, read a request head within
//! a deadline (a client that trickles or never finishes its request is dropped when the
//! deadline passes, without holding anything else up), and call the handler. Connections
//! beyond what the pool and its queue hold are closed at once.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::http::{
    read_request, write_response, After, Conn, Handler, ReadError, Response, HEAD_TIMEOUT,
};

/// How long a kept-alive connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Handler threads kept even when idle.
const MIN_WORKERS: usize = 4;
/// How long an extra handler thread waits for work before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(30);
/// Connections the kernel queues before they are accepted.
const LISTEN_BACKLOG: i32 = 4096;
/// How often an idle handler thread looks whether the server stopped.
const WORKER_POLL: Duration = Duration::from_secs(1);
/// Accepted connections waiting for a handler thread; beyond this they are closed.
const QUEUE: usize = 256;

/// A running server: its address and threads.
pub struct Server {
    /// The bound address.
    pub addr: SocketAddr,
    /// The accept thread.
    pub thread: JoinHandle<()>,
}

struct Pool {
    name: &'static str,
    jobs: Sender<TcpStream>,
    queue: Receiver<TcpStream>,
    /// Handler threads waiting for a connection (a new thread counts from its start).
    idle: AtomicUsize,
    total: AtomicUsize,
    max: usize,
    head_timeout: Duration,
    tls: Option<Arc<ServerConfig>>,
    handler: Arc<dyn Handler>,
    /// Set when the accept thread ends; idle handler threads then end too.
    stopping: std::sync::atomic::AtomicBool,
}

/// Serves `handler` on `listener` (TLS when `tls` is set) with at most `max_workers`
/// handler threads, until `stop` fires or closes.
pub fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    handler: Arc<dyn Handler>,
    max_workers: usize,
    stop: Receiver<()>,
) -> io::Result<Server> {
    serve_with(
        name,
        listener,
        tls,
        handler,
        max_workers,
        HEAD_TIMEOUT,
        stop,
    )
}

/// [`serve`] with the time a client has for its handshake and request head.
pub fn serve_with(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    handler: Arc<dyn Handler>,
    max_workers: usize,
    head_timeout: Duration,
    stop: Receiver<()>,
) -> io::Result<Server> {
    let addr = listener.local_addr()?;
    // A burst of connections beyond std's backlog of 128 would have its SYNs dropped and
    // retried a second later; the kernel caps this at net.core.somaxconn.
    rustix::net::listen(&listener, LISTEN_BACKLOG)?;
    listener.set_nonblocking(true)?;
    let (jobs, queue) = crossbeam_channel::bounded(QUEUE);
    let pool = Arc::new(Pool {
        name,
        jobs,
        queue,
        idle: AtomicUsize::new(0),
        total: AtomicUsize::new(0),
        max: max_workers.max(MIN_WORKERS),
        head_timeout,
        tls,
        handler,
        stopping: std::sync::atomic::AtomicBool::new(false),
    });
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            accept_loop(&listener, &pool, &stop);
            pool.stopping.store(true, Ordering::SeqCst);
        })?;
    Ok(Server { addr, thread })
}

/// How long the accept loop waits for a connection before it looks at its stop channel.
const ACCEPT_WAIT: Duration = Duration::from_millis(250);
/// Accepted connections that have sent nothing yet, held by the accept thread (one file
/// descriptor each, no thread); beyond this the oldest is closed.
const MAX_SILENT: usize = 4096;

/// A connection that has sent nothing yet, and when it must have.
struct Silent {
    socket: TcpStream,
    deadline: Instant,
}

/// Accepts connections and keeps each one until its first bytes arrive; only then does a
/// handler thread take it. A client that connects and never speaks (thousands of them, or a
/// slow TLS handshake's first flight) holds a file descriptor for the head deadline, not a
/// thread.
fn accept_loop(listener: &TcpListener, pool: &Arc<Pool>, stop: &Receiver<()>) {
    let mut silent: Vec<Silent> = Vec::new();
    loop {
        match stop.try_recv() {
            Err(crossbeam_channel::TryRecvError::Empty) => {}
            _ => return,
        }
        accept_pending(listener, pool, &mut silent);
        let now = Instant::now();
        silent.retain(|s| {
            let live = s.deadline > now;
            if !live {
                let _ = s.socket.shutdown(Shutdown::Both);
            }
            live
        });
        let wait = silent
            .iter()
            .map(|s| s.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(ACCEPT_WAIT)
            .min(ACCEPT_WAIT);
        let spoke = poll_silent(listener, &silent, wait);
        // Highest index first, so the lower ones stay where they are.
        for i in spoke.into_iter().rev() {
            let socket = silent.swap_remove(i).socket;
            hand_over(pool, socket);
        }
    }
}

/// Accepts every connection the kernel has queued into `silent`.
fn accept_pending(listener: &TcpListener, pool: &Pool, silent: &mut Vec<Silent>) {
    loop {
        match listener.accept() {
            Ok((socket, _)) => {
                if socket.set_nonblocking(false).is_err() {
                    continue;
                }
                let _ = socket.set_nodelay(true);
                let _ = socket.set_write_timeout(Some(WRITE_TIMEOUT));
                if silent.len() >= MAX_SILENT {
                    let oldest = silent.remove(0);
                    let _ = oldest.socket.shutdown(Shutdown::Both);
                    log::warn!(
                        "{}: {MAX_SILENT} connections have sent nothing; closing the oldest",
                        pool.name
                    );
                }
                silent.push(Silent {
                    socket,
                    deadline: Instant::now() + pool.head_timeout,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                // Out of file descriptors, most likely: the backlog keeps the rest.
                log::warn!("{}: accept: {e}", pool.name);
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
        }
    }
}

/// Sleeps in poll(2) until the listener or a silent connection is readable, or `wait`
/// passes; the indexes of the connections that spoke (or hung up), ascending.
fn poll_silent(listener: &TcpListener, silent: &[Silent], wait: Duration) -> Vec<usize> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let timeout = Timespec {
        tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    let mut fds = Vec::with_capacity(silent.len() + 1);
    fds.push(PollFd::new(listener, PollFlags::IN));
    fds.extend(silent.iter().map(|s| PollFd::new(&s.socket, PollFlags::IN)));
    if !matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0) {
        return Vec::new();
    }
    fds.iter()
        .skip(1)
        .enumerate()
        .filter(|(_, fd)| !fd.revents().is_empty())
        .map(|(i, _)| i)
        .collect()
}

/// Queues a connection that spoke for a handler thread, or closes it when the queue is full.
fn hand_over(pool: &Arc<Pool>, socket: TcpStream) {
    match pool.jobs.try_send(socket) {
        Ok(()) => grow(pool),
        Err(TrySendError::Full(socket)) => {
            log::warn!(
                "{}: {QUEUE} connections waiting; closing a new one",
                pool.name
            );
            let _ = socket.shutdown(Shutdown::Both);
        }
        Err(TrySendError::Disconnected(socket)) => {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// Starts handler threads until every waiting connection has an idle one, up to the limit.
fn grow(pool: &Arc<Pool>) {
    while pool.queue.len() > pool.idle.load(Ordering::SeqCst) {
        let total = pool.total.load(Ordering::SeqCst);
        if total >= pool.max {
            return;
        }
        if pool
            .total
            .compare_exchange(total, total + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            continue;
        }
        // Counted idle before it runs, so the loop does not start one per check.
        pool.idle.fetch_add(1, Ordering::SeqCst);
        let worker_pool = Arc::clone(pool);
        let spawned = std::thread::Builder::new()
            .name(format!("{}-handler", pool.name))
            .spawn(move || worker(&worker_pool));
        if let Err(e) = spawned {
            pool.idle.fetch_sub(1, Ordering::SeqCst);
            pool.total.fetch_sub(1, Ordering::SeqCst);
            log::error!("{}: starting a handler thread: {e}", pool.name);
            return;
        }
    }
}

/// A handler thread; it was counted idle when started.
fn worker(pool: &Arc<Pool>) {
    let mut idle_since = Instant::now();
    loop {
        let job = pool.queue.recv_timeout(WORKER_POLL);
        pool.idle.fetch_sub(1, Ordering::SeqCst);
        match job {
            Ok(socket) => {
                // Others may still be waiting behind this one.
                grow(pool);
                serve_connection(pool, socket, &pool.tls, pool.handler.as_ref());
                idle_since = Instant::now();
            }
            Err(RecvTimeoutError::Timeout) => {
                if pool.stopping.load(Ordering::SeqCst) {
                    pool.total.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                // Shrink back after a while, keeping a few threads warm.
                let total = pool.total.load(Ordering::SeqCst);
                if idle_since.elapsed() >= WORKER_IDLE
                    && total > MIN_WORKERS
                    && pool
                        .total
                        .compare_exchange(total, total - 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                pool.total.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
        pool.idle.fetch_add(1, Ordering::SeqCst);
    }
}

fn serve_connection(
    pool: &Pool,
    socket: TcpStream,
    tls: &Option<Arc<ServerConfig>>,
    handler: &dyn Handler,
) {
    let remote = socket.peer_addr().ok();
    let mut conn = match tls {
        Some(config) => match ServerConnection::new(Arc::clone(config)) {
            Ok(c) => Conn::Tls(Box::new(StreamOwned::new(c, socket))),
            Err(e) => {
                log::warn!("TLS set-up: {e}");
                return;
            }
        },
        None => Conn::Plain(socket),
    };
    let mut carry = Vec::new();
    let mut first = true;
    loop {
        // The first request gets the full head deadline (it includes the TLS handshake);
        // a kept-alive connection gets the idle time to start the next one.
        let deadline = Instant::now()
            + if first {
                pool.head_timeout
            } else {
                IDLE_TIMEOUT
            };
        first = false;
        let mut request = match read_request(&mut conn, &mut carry, deadline) {
            Ok(r) => r,
            Err(ReadError::TooLarge) => {
                let _ = write_response(
                    &mut conn,
                    &Response::text(431, "request too large\n"),
                    "GET",
                    false,
                );
                break;
            }
            Err(ReadError::BodyTooLarge) => {
                let r = Response::text(413, "request body too large\n");
                let _ = write_response(&mut conn, &r, "GET", false);
                break;
            }
            Err(ReadError::Malformed(why)) => {
                let body = format!("bad request: {why}\n");
                let _ = write_response(&mut conn, &Response::text(400, body), "GET", false);
                break;
            }
            Err(ReadError::Closed | ReadError::Io(_)) => break,
        };
        request.remote = remote;
        let _ = conn.set_read_timeout(None);
        // Let waiting connections in rather than holding a thread for an idle client.
        if !pool.queue.is_empty() {
            request.keep_alive = false;
        }
        match handler.handle(&request, &mut conn) {
            Ok(After::KeepAlive) if request.keep_alive => continue,
            Ok(_) => break,
            Err(e) => {
                log::debug!("{} {}: {e}", request.method, request.path);
                break;
            }
        }
    }
    if let Conn::Tls(stream) = &mut conn {
        // A handshake that never finished gets no alert: flushing would wait on it again.
        if !stream.conn.is_handshaking() {
            stream.conn.send_close_notify();
            let _ = stream.conn.write_tls(&mut stream.sock);
        }
    }
    let _ = conn.tcp().shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::super::http::Request;
    use super::*;
    use std::io::{Read, Write};

    struct Hello;
    impl Handler for Hello {
        fn handle(&self, request: &Request, conn: &mut Conn) -> io::Result<After> {
            write_response(
                conn,
                &Response::text(200, "hi"),
                &request.method,
                request.keep_alive,
            )?;
            Ok(After::KeepAlive)
        }
    }

    #[test]
    fn stalled_clients_are_dropped_at_the_head_deadline_while_others_are_served() {
        let dir = std::env::temp_dir().join(format!("rkubelet-http-{}", std::process::id()));
        let settings = super::super::tls::TlsSettings {
            cert_dir: dir.join("pki"),
            hostnames: vec!["127.0.0.1".into()],
            ..Default::default()
        };
        let tls = super::super::tls::server_config(&settings).unwrap();
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limit = Duration::from_secs(2);
        let server = serve_with(
            "test-http",
            listener,
            Some(tls),
            Arc::new(Hello),
            8,
            limit,
            stop,
        )
        .unwrap();
        let started = Instant::now();
        let mut stalled: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(server.addr).unwrap();
                s.write_all(&[0x16, 0x03]).unwrap();
                s
            })
            .collect();
        // A client trickling a byte at a time is dropped at the same deadline.
        let mut trickle = TcpStream::connect(server.addr).unwrap();
        trickle.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
        let mut feeder = trickle.try_clone().unwrap();
        std::thread::spawn(move || {
            while feeder.write_all(&[0x01]).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        stalled.push(trickle);
        // A plain-text client on the TLS port gets an error, not a hang.
        let mut plain = TcpStream::connect(server.addr).unwrap();
        plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        for s in &mut stalled {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => panic!("not dropped"),
                    Err(_) => break,
                }
            }
        }
        let took = started.elapsed();
        assert!(took >= limit, "dropped only at the deadline ({took:?})");
        assert!(
            took < limit + Duration::from_millis(1500),
            "dropped at the deadline, not later ({took:?})"
        );
        drop(stop_tx);
        server.thread.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn connections_that_never_speak_hold_no_handler_thread() {
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limit = Duration::from_secs(2);
        let server = serve_with(
            "test-silent",
            listener,
            None,
            Arc::new(Hello),
            4,
            limit,
            stop,
        )
        .unwrap();
        // Far more silent connections than handler threads and queue places together.
        let silent: Vec<TcpStream> = (0..(QUEUE + 300))
            .map(|_| TcpStream::connect(server.addr).unwrap())
            .collect();
        let started = Instant::now();
        let mut good = TcpStream::connect(server.addr).unwrap();
        good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        good.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        good.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hi"), "{answer}");
        assert!(
            started.elapsed() < limit,
            "served at once beside {} silent connections, not after {:?}",
            silent.len(),
            started.elapsed()
        );
        // The silent ones are closed at the head deadline.
        let mut first = silent.into_iter().next().unwrap();
        first
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 8];
        assert!(matches!(first.read(&mut buf), Ok(0) | Err(_)));
        assert!(started.elapsed() >= limit - Duration::from_millis(500));
        drop(stop_tx);
        server.thread.join().unwrap();
    }
}
