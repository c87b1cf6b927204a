//! Hostile clients on the kubelet API port (the real `rkubelet` binary on containerd):
//! thousands of connections that never speak, slowloris clients trickling their TLS
//! handshake or request head a byte at a time, oversized heads and bodies, garbage instead of
//! TLS, and followers of a busy container log that never read. Meanwhile a well-behaved
//! client is served, the kubelet's threads stay within its bounds, its memory stays bounded,
//! and when the hostile clients are gone it shrinks back.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use support::apiserver::Identity;
use support::e2e::{pod, wait_phase, Cluster, SERIAL};
use support::kubelet_api::{client_config, parse_reply, Reply};
use support::{process, wait_for};

/// The kubelet API's handler threads at most (`server::MAX_HANDLERS`).
const MAX_HANDLERS: usize = rkubelet::server::MAX_HANDLERS;

/// Raises this process's open-file limit, for thousands of client sockets.
fn raise_fd_limit() {
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg("--nofile=16384:16384")
        .status()
        .unwrap();
    assert!(status.success(), "prlimit");
}

/// A TLS connection to the kubelet API as `identity`.
fn tls(
    addr: SocketAddr,
    cert_dir: &Path,
    identity: &Identity,
) -> std::io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let socket = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    socket.set_read_timeout(Some(Duration::from_secs(20)))?;
    socket.set_write_timeout(Some(Duration::from_secs(20)))?;
    let name = ServerName::try_from(addr.ip().to_string()).unwrap();
    let conn = ClientConnection::new(client_config(cert_dir, Some(identity)), name).unwrap();
    Ok(StreamOwned::new(conn, socket))
}

/// One request, or the error that ended it (a refused or reset connection under load).
fn try_request(
    addr: SocketAddr,
    cert_dir: &Path,
    identity: &Identity,
    path: &str,
) -> std::io::Result<Reply> {
    let mut s = tls(addr, cert_dir, identity)?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    if raw.is_empty() {
        return Err(std::io::Error::other("closed without an answer"));
    }
    Ok(parse_reply(&raw))
}

/// How long a well-behaved client takes to get `path` answered 200, retrying refused or
/// reset connections as any client would.
fn served_within(
    addr: SocketAddr,
    cert_dir: &Path,
    identity: &Identity,
    path: &str,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < limit {
        match try_request(addr, cert_dir, identity, path) {
            Ok(r) if r.status == 200 => return started.elapsed(),
            other => last = Some(format!("{:?}", other.map(|r| r.status))),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{path} not served within {limit:?}: last {last:?}");
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn hostile_clients_on_the_kubelet_port_get_bounded_threads_and_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    raise_fd_limit();
    let c = Cluster::start("hostile-clients");
    c.wait_ready_node();
    c.server
        .create_pod(pod(
            "chatty",
            "while true; do echo the quick brown fox jumps over the lazy dog; done",
            2,
        ))
        .unwrap();
    wait_phase(&c, "chatty", "Running", Duration::from_secs(60));
    let addr = SocketAddr::from(([127, 0, 0, 1], c.port));
    let cert_dir = c.dir.join("root/pki");
    let identity = c.server.issue_client_cert("kube-apiserver-kubelet-client");
    served_within(
        addr,
        &cert_dir,
        &identity,
        "/healthz",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(2));
    let baseline = process::sample(c.pid()).unwrap();
    eprintln!("baseline: {baseline}");

    let stop = Arc::new(AtomicBool::new(false));
    let mut hostile = Vec::new();
    // Followers of a busy log that never read: the kubelet's writes block on them.
    let mut followers = Vec::new();
    for _ in 0..10 {
        let mut s = tls(addr, &cert_dir, &identity).unwrap();
        s.write_all(
            format!("GET /containerLogs/default/chatty/app?follow=true HTTP/1.1\r\nHost: {addr}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        followers.push(s);
    }
    // Oversized heads and bodies, each answered with an error and closed.
    for big_body in [false, true] {
        let mut s = tls(addr, &cert_dir, &identity).unwrap();
        let request = if big_body {
            format!("POST /exec/default/chatty/app?command=true&output=1 HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n", 64 << 20)
        } else {
            format!(
                "GET /pods HTTP/1.1\r\nHost: {addr}\r\nX-Filler: {}\r\n\r\n",
                "a".repeat(2 << 20)
            )
        };
        let _ = s.write_all(request.as_bytes());
        let _ = s.write_all(&vec![b'x'; 1 << 20]);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let status = (!raw.is_empty()).then(|| parse_reply(&raw).status);
        eprintln!(
            "oversized {}: answered {status:?}",
            if big_body { "body" } else { "head" }
        );
        assert!(
            matches!(status, None | Some(400..=499)),
            "oversized request got {status:?}"
        );
    }
    // Garbage instead of a TLS handshake.
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01\xff\xff garbage");
        hostile.push(s);
    }
    // Slowloris: handshakes and heads trickled a byte at a time.
    let trickle = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut slow: Vec<TcpStream> = (0..50)
                .filter_map(|_| TcpStream::connect(addr).ok())
                .collect();
            let hello = [
                0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ];
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                slow.retain_mut(|s| s.write_all(&hello[i % hello.len()..][..1]).is_ok());
                // The dropped ones come back, as a slowloris does.
                while slow.len() < 50 {
                    match TcpStream::connect(addr) {
                        Ok(s) => slow.push(s),
                        Err(_) => break,
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    // Thousands of connections that never send a byte.
    for _ in 0..3000 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => hostile.push(s),
            Err(e) => eprintln!("connect refused under the flood: {e}"),
        }
    }
    eprintln!("{} idle and garbage connections open", hostile.len());

    // A well-behaved client is served while all of that goes on.
    let mut worst = Duration::ZERO;
    let mut peak = baseline.clone();
    let flood = Instant::now();
    while flood.elapsed() < Duration::from_secs(30) {
        let took = served_within(addr, &cert_dir, &identity, "/pods", Duration::from_secs(30));
        worst = worst.max(took);
        let now =
            process::sample(c.pid()).unwrap_or_else(|| panic!("kubelet exited:\n{}", c.log()));
        if now.threads > peak.threads {
            peak.threads = now.threads;
            peak.roles = now.roles.clone();
        }
        peak.rss_kib = peak.rss_kib.max(now.rss_kib);
        peak.fds = peak.fds.max(now.fds);
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("under attack: peak {peak}; slowest /pods {worst:?}");
    assert!(
        peak.threads <= baseline.threads + MAX_HANDLERS + 4,
        "threads not bounded: {} at baseline, {} under attack",
        baseline.threads,
        peak.threads
    );
    assert!(
        peak.rss_kib <= baseline.rss_kib + 64 * 1024,
        "memory not bounded: {} KiB at baseline, {} KiB under attack",
        baseline.rss_kib,
        peak.rss_kib
    );

    // The attack ends: connections close, and the kubelet gives back its extra threads.
    stop.store(true, Ordering::SeqCst);
    trickle.join().unwrap();
    drop(hostile);
    drop(followers);
    let settled = wait_for(Duration::from_secs(120), || {
        let now = process::sample(c.pid())?;
        (now.threads <= baseline.threads + 4).then_some(now)
    })
    .unwrap_or_else(|| {
        panic!(
            "threads did not come back: baseline {baseline}, now {:?}",
            process::sample(c.pid())
        )
    });
    eprintln!("after: {settled}");
    served_within(
        addr,
        &cert_dir,
        &identity,
        "/healthz",
        Duration::from_secs(5),
    );
    assert_eq!(c.phase("chatty").as_deref(), Some("Running"));
}
