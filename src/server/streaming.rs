//! The streaming proxy behind `/exec`, `/attach` and `/portForward` (upstream
//! `proxyStream`): the runtime hands out a URL on its own streaming server; the client's
//! upgrade request is forwarded there as received (minus hop-by-hop headers other than the
//! upgrade itself), the runtime's answer is relayed, and after a `101 Switching Protocols`
//! bytes are copied both ways until either side closes or the connection sits idle for
//! `streamingConnectionIdleTimeout`. SPDY and WebSocket pass through alike: the proxy
//! never decodes frames.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::http::{self, Conn, Request, Response};

/// Time to connect to the runtime's streaming server and get its answer head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one side is waited on before the other is looked at.
const POLL: Duration = Duration::from_millis(10);
/// Largest answer head accepted from the runtime.
const MAX_HEAD: usize = 64 * 1024;

/// Headers that belong to one hop; `Connection` and `Upgrade` are forwarded anyway, since
/// the upgrade is what the runtime must see.
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "authorization",
    "host",
    "content-length",
];

/// `http://host:port/path?query` → (`host:port`, `/path?query`).
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Some((authority, path.to_string()))
}

/// Proxies `request` (already authorized) to the runtime's streaming `url`.
pub fn proxy(
    request: &Request,
    client: &mut Conn,
    url: &str,
    idle_timeout: Duration,
) -> io::Result<()> {
    let fail = |client: &mut Conn, status: u16, why: String| {
        log::info!("kubelet API: {} {}: {why}", request.method, request.path);
        http::write_response(client, &Response::text(status, why), &request.method, false)
    };
    let Some((authority, path)) = split_url(url) else {
        return fail(
            client,
            500,
            format!("unsupported streaming URL from the runtime: {url}"),
        );
    };
    let addr = match authority.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => a,
        None => return fail(client, 502, format!("cannot resolve {authority}")),
    };
    let mut backend = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return fail(client, 502, format!("connecting to {authority}: {e}")),
    };
    backend.set_nodelay(true)?;
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {authority}\r\n",
        request.method
    );
    for (name, value) in &request.headers {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    backend.write_all(head.as_bytes())?;

    // The runtime's answer head, relayed verbatim.
    backend.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let head_end = loop {
        if let Some(i) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if answer.len() > MAX_HEAD {
            return fail(client, 502, "oversized answer from the runtime".into());
        }
        let n = match backend.read(&mut buf) {
            Ok(0) => return fail(client, 502, "the runtime closed the stream".into()),
            Ok(n) => n,
            Err(e) => return fail(client, 502, format!("reading from the runtime: {e}")),
        };
        answer.extend_from_slice(&buf[..n]);
    };
    let status_line = String::from_utf8_lossy(&answer[..head_end]);
    let upgraded = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code == "101");
    client.write_all(&answer)?;
    client.flush()?;
    if !upgraded {
        // An error answer: pass its body through until the runtime closes.
        backend.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        io::copy(&mut backend, client)?;
        client.flush()?;
        return Ok(());
    }
    splice(client, &mut backend, idle_timeout)
}

/// Copies bytes between `client` and `backend` until one closes or both sit idle for
/// `idle_timeout` (zero: no limit). A `backend-reader` thread reads the runtime's side into
/// a bounded channel, so its output keeps flowing to the client while a write to the
/// runtime waits (a process that stops reading its stdin cannot stall its stdout).
fn splice(client: &mut Conn, backend: &mut TcpStream, idle_timeout: Duration) -> io::Result<()> {
    client.set_read_timeout(Some(POLL))?;
    backend.set_write_timeout(Some(POLL))?;
    let mut reader = backend.try_clone()?;
    reader.set_read_timeout(None)?;
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(16);
    let pump = std::thread::Builder::new()
        .name("backend-reader".into())
        .spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        })?;
    let result = splice_loop(client, backend, &rx, idle_timeout);
    let _ = backend.shutdown(Shutdown::Both);
    drop(rx);
    let _ = pump.join();
    result
}

fn splice_loop(
    client: &mut Conn,
    backend: &mut TcpStream,
    from_backend: &crossbeam_channel::Receiver<Vec<u8>>,
    idle_timeout: Duration,
) -> io::Result<()> {
    let waiting = |e: &io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let mut buf = vec![0u8; 32 * 1024];
    // Client bytes not yet taken by the runtime.
    let mut pending: Vec<u8> = Vec::new();
    let mut client_open = true;
    let mut last = Instant::now();
    loop {
        let mut moved = false;
        // Runtime → client: everything that is there.
        loop {
            match from_backend.try_recv() {
                Ok(data) => {
                    client.write_all(&data)?;
                    moved = true;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    client.flush()?;
                    return Ok(());
                }
            }
        }
        if moved {
            client.flush()?;
        }
        // Client → runtime, as far as the runtime takes it.
        if !pending.is_empty() {
            match backend.write(&pending) {
                Ok(n) => {
                    pending.drain(..n);
                    moved |= n > 0;
                }
                Err(e) if waiting(&e) => {}
                Err(e) => return Err(e),
            }
        } else if client_open {
            match client.read(&mut buf) {
                Ok(0) => {
                    client_open = false;
                    let _ = backend.shutdown(Shutdown::Write);
                }
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    moved = true;
                }
                Err(e) if waiting(&e) => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    client_open = false;
                    let _ = backend.shutdown(Shutdown::Write);
                }
                Err(e) => return Err(e),
            }
        } else {
            // Only the runtime's side is left: wait on it.
            match from_backend.recv_timeout(POLL) {
                Ok(data) => {
                    client.write_all(&data)?;
                    client.flush()?;
                    moved = true;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
        if moved {
            last = Instant::now();
        } else if !idle_timeout.is_zero() && last.elapsed() > idle_timeout {
            log::info!("stream idle for {idle_timeout:?}; closing it");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn runtime_urls_split_into_address_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:35001/exec/abcDEF"),
            Some(("127.0.0.1:35001".into(), "/exec/abcDEF".into()))
        );
        assert_eq!(
            split_url("http://localhost"),
            Some(("localhost:80".into(), "/".into()))
        );
        assert_eq!(split_url("https://x/y"), None);
    }

    /// A streaming server that answers 101 and echoes upper-cased bytes.
    fn upgrade_echo_server() -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/exec/tok", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut b).unwrap();
                head.push(b[0]);
            }
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n")
                .unwrap();
            let mut data = [0u8; 64];
            let n = s.read(&mut data).unwrap();
            s.write_all(data[..n].to_ascii_uppercase().as_slice())
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        (url, handle)
    }

    #[test]
    fn upgrades_are_forwarded_and_spliced_both_ways() {
        let (url, runtime) = upgrade_echo_server();
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        let proxy_side = std::thread::spawn(move || {
            let (s, _) = front.accept().unwrap();
            let mut conn = Conn::Plain(s);
            let mut carry = Vec::new();
            let request = http::read_request(
                &mut conn,
                &mut carry,
                Instant::now() + Duration::from_secs(5),
            )
            .unwrap();
            proxy(&request, &mut conn, &url, Duration::from_secs(5)).unwrap();
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"POST /exec/ns/p/c?command=echo HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer secret\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"));
        c.write_all(b"hello").unwrap();
        let mut out = [0u8; 5];
        c.read_exact(&mut out).unwrap();
        assert_eq!(&out, b"HELLO");
        let forwarded = runtime.join().unwrap();
        assert!(
            forwarded.starts_with("POST /exec/tok HTTP/1.1\r\n"),
            "{forwarded}"
        );
        assert!(forwarded.contains("upgrade: SPDY/3.1\r\n"), "{forwarded}");
        assert!(forwarded.contains("x-stream-protocol-version: v4.channel.k8s.io\r\n"));
        assert!(
            !forwarded.contains("secret"),
            "credentials stay with the kubelet"
        );
        drop(c);
        proxy_side.join().unwrap();
    }

    #[test]
    fn a_runtime_that_writes_before_it_reads_does_not_stall_the_proxy() {
        const SIZE: usize = 8 << 20;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/attach/tok", listener.local_addr().unwrap());
        // The "process": floods its output first, reads its input only afterwards.
        let runtime = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut b).unwrap();
                head.push(b[0]);
            }
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                .unwrap();
            s.write_all(&vec![b'o'; SIZE]).unwrap();
            let mut got = 0;
            let mut buf = vec![0u8; 64 * 1024];
            while got < SIZE {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                got += n;
            }
            got
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        let proxy_side = std::thread::spawn(move || {
            let (s, _) = front.accept().unwrap();
            let mut conn = Conn::Plain(s);
            let mut carry = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            let request = http::read_request(&mut conn, &mut carry, deadline).unwrap();
            proxy(&request, &mut conn, &url, Duration::from_secs(30)).unwrap();
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(
            b"POST /attach/ns/p/c HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n",
        )
        .unwrap();
        // The client floods its input at the same time.
        let mut input = c.try_clone().unwrap();
        let writer = std::thread::spawn(move || input.write_all(&vec![b'i'; SIZE]).unwrap());
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut received = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while received < SIZE {
            let n = c.read(&mut buf).expect("output keeps flowing");
            assert!(n > 0, "stream ended early");
            received += n;
        }
        writer.join().unwrap();
        assert_eq!(runtime.join().unwrap(), SIZE);
        drop(c);
        proxy_side.join().unwrap();
    }
}
