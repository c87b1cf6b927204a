//! The healthz endpoint on `healthzBindAddress:healthzPort` (default 127.0.0.1:10248), which
//! `kubeadm` and service managers poll: `/healthz` runs every check, `/healthz/<name>` one of
//! them (`ping`, `log`, `syncloop`), and `?verbose` lists each result, as upstream's healthz
//! handler does. One `healthz` thread serves connections one at a time with a short timeout
//! per request; if the address cannot be bound it logs and tries again every 5 seconds, as
//! upstream does, without stopping the kubelet.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

/// A named check: `Ok` when healthy, else why not.
pub type Check = (
    &'static str,
    Box<dyn Fn() -> Result<(), String> + Send + Sync>,
);

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 8 * 1024;
const RETRY_BIND: Duration = Duration::from_secs(5);

/// The response to `path` (with its query): status code and body.
pub fn respond(checks: &[Check], path: &str) -> (u16, String) {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let verbose = query
        .split('&')
        .any(|p| p == "verbose" || p.starts_with("verbose="));
    let path = path.trim_end_matches('/');
    let selected: Vec<&Check> = match path {
        "/healthz" => checks.iter().collect(),
        p => match p.strip_prefix("/healthz/") {
            Some(name) => match checks.iter().find(|(n, _)| *n == name) {
                Some(c) => vec![c],
                None => return (404, "404 page not found\n".into()),
            },
            None => return (404, "404 page not found\n".into()),
        },
    };
    let mut lines = String::new();
    let mut failed = false;
    for (name, check) in &selected {
        match check() {
            Ok(()) => lines.push_str(&format!("[+]{name} ok\n")),
            Err(why) => {
                failed = true;
                log::info!("healthz check {name} failed: {why}");
                lines.push_str(&format!("[-]{name} failed: reason withheld\n"));
            }
        }
    }
    if failed {
        (500, format!("{lines}healthz check failed\n"))
    } else if verbose {
        (200, format!("{lines}healthz check passed\n"))
    } else {
        (200, "ok".into())
    }
}

fn serve_one(mut conn: TcpStream, checks: &[Check]) -> io::Result<()> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            conn.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("/"),
    );
    let (code, body) = if method == "GET" || method == "HEAD" {
        respond(checks, path)
    } else {
        (405, "method not allowed\n".into())
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(&body);
    }
    conn.write_all(out.as_bytes())
}

/// Starts the `healthz` thread on `addr`; it ends when `stop` fires or closes.
pub fn start(
    addr: SocketAddr,
    checks: Vec<Check>,
    stop: Receiver<()>,
) -> io::Result<JoinHandle<()>> {
    let checks = Arc::new(checks);
    std::thread::Builder::new()
        .name("healthz".into())
        .spawn(move || {
            let mut next_try = Instant::now();
            let mut listener: Option<TcpListener> = None;
            loop {
                if listener.is_none() && Instant::now() >= next_try {
                    match TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l))
                    {
                        Ok(l) => {
                            log::info!("healthz serving on http://{addr}/healthz");
                            listener = Some(l);
                        }
                        Err(e) => {
                            log::error!(
                                "healthz server on {addr} failed to start: {e}; trying again in 5s"
                            );
                            next_try = Instant::now() + RETRY_BIND;
                        }
                    }
                }
                if let Some(l) = &listener {
                    match l.accept() {
                        Ok((conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            if let Err(e) = serve_one(conn, &checks) {
                                log::debug!("healthz request: {e}");
                            }
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Sleeps until a client connects, waking to look at `stop`.
                            crate::util::wait_readable(l, Duration::from_millis(250));
                        }
                        Err(e) => log::debug!("healthz accept: {e}"),
                    }
                }
                let wait = if listener.is_some() {
                    Duration::ZERO
                } else {
                    next_try.saturating_duration_since(Instant::now())
                };
                match stop.recv_timeout(wait) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn checks(healthy: Arc<AtomicBool>) -> Vec<Check> {
        vec![
            ("ping", Box::new(|| Ok(()))),
            (
                "syncloop",
                Box::new(move || {
                    if healthy.load(Ordering::SeqCst) {
                        Ok(())
                    } else {
                        Err("sync Loop took longer than expected".into())
                    }
                }),
            ),
        ]
    }

    #[test]
    fn responses_as_upstream() {
        let healthy = Arc::new(AtomicBool::new(true));
        let c = checks(healthy.clone());
        assert_eq!(respond(&c, "/healthz"), (200, "ok".into()));
        assert_eq!(
            respond(&c, "/healthz?verbose"),
            (
                200,
                "[+]ping ok\n[+]syncloop ok\nhealthz check passed\n".into()
            )
        );
        assert_eq!(respond(&c, "/healthz/ping").0, 200);
        assert_eq!(respond(&c, "/healthz/nope").0, 404);
        assert_eq!(respond(&c, "/other").0, 404);
        healthy.store(false, Ordering::SeqCst);
        assert_eq!(
            respond(&c, "/healthz"),
            (
                500,
                "[+]ping ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n".into()
            )
        );
        assert_eq!(respond(&c, "/healthz/ping").0, 200);
        assert_eq!(respond(&c, "/healthz/syncloop").0, 500);
    }

    #[test]
    fn serves_over_tcp_and_stops() {
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let handle = start(addr, checks(Arc::new(AtomicBool::new(true))), stop_rx).unwrap();
        let mut answer = String::new();
        for _ in 0..50 {
            if let Ok(mut s) = TcpStream::connect(addr) {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                s.read_to_string(&mut answer).unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
        drop(stop_tx);
        handle.join().unwrap();
    }
}
