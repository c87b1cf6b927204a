//! Container logs for `/containerLogs/{ns}/{pod}/{container}`: reads a CRI log file
//! (`<RFC3339Nano time> <stdout|stderr> <P|F> <content>` per line), joins partial lines,
//! and applies `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes` and
//! `follow` as upstream's log reader does. A followed file that is rotated (renamed away and
//! replaced) is picked up again at the start of the new file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use super::http::Request;

/// The query options of a log request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `follow`.
    pub follow: bool,
    /// `tailLines`.
    pub tail_lines: Option<u64>,
    /// `timestamps`.
    pub timestamps: bool,
    /// `previous`: the container's previous attempt.
    pub previous: bool,
    /// `sinceSeconds`/`sinceTime`, as nanoseconds since the epoch.
    pub since_nanos: Option<i128>,
    /// `limitBytes`.
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Reads the options from a request's query, naming the parameter that is invalid.
    pub fn from_request(request: &Request) -> Result<LogOptions, String> {
        let number = |name: &str| -> Result<Option<i64>, String> {
            request
                .query(name)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| format!("{name}: invalid value {v:?}: must be an integer"))
                })
                .transpose()
        };
        let positive = |name: &str, v: Option<i64>| -> Result<Option<u64>, String> {
            match v {
                Some(n) if n < 0 => Err(format!("{name}: must be greater than or equal to 0")),
                Some(n) => Ok(Some(n.unsigned_abs())),
                None => Ok(None),
            }
        };
        let tail_lines = positive("tailLines", number("tailLines")?)?;
        let limit_bytes = match number("limitBytes")? {
            Some(n) if n < 1 => return Err("limitBytes: must be greater than 0".into()),
            v => positive("limitBytes", v)?,
        };
        let since_seconds = match number("sinceSeconds")? {
            Some(n) if n < 1 => return Err("sinceSeconds: must be greater than 0".into()),
            v => v,
        };
        let since_time = request
            .query("sinceTime")
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<Timestamp>()
                    .map(|t| t.as_nanosecond())
                    .map_err(|_| format!("sinceTime: invalid value {v:?}: must be RFC3339"))
            })
            .transpose()?;
        if since_seconds.is_some() && since_time.is_some() {
            return Err("at most one of sinceTime or sinceSeconds may be specified".into());
        }
        let since_nanos = since_time.or_else(|| {
            since_seconds
                .map(|s| super::stats::now().as_nanosecond() - i128::from(s) * 1_000_000_000)
        });
        Ok(LogOptions {
            follow: request.query_flag("follow"),
            tail_lines,
            timestamps: request.query_flag("timestamps"),
            previous: request.query_flag("previous"),
            since_nanos,
            limit_bytes,
        })
    }
}

/// One parsed CRI log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// The timestamp as written.
    pub time: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// Whether this ends a line (`F`) or continues on the next entry (`P`).
    pub full: bool,
    /// The content (without the newline).
    pub content: &'a [u8],
}

/// Parses one CRI log line (without its newline).
pub fn parse_line(line: &[u8]) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    // Tags may carry several ':'-separated flags; the first is P or F.
    let full = !tag.starts_with(b"P");
    Some(LogLine {
        time,
        stream,
        full,
        content,
    })
}

/// Writes log entries to `out`, keeping count of the byte limit.
struct Writer<'a> {
    out: &'a mut dyn Write,
    options: &'a LogOptions,
    left: Option<u64>,
}

impl Writer<'_> {
    /// Writes one raw file line; `false` once the byte limit is reached.
    fn line(&mut self, raw: &[u8]) -> io::Result<bool> {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let Some(entry) = parse_line(raw) else {
            log::debug!(
                "containerLogs: skipping a malformed log line: {:?}",
                String::from_utf8_lossy(raw)
            );
            return Ok(true);
        };
        if let Some(since) = self.options.since_nanos {
            match entry.time.parse::<Timestamp>() {
                Ok(t) if t.as_nanosecond() < since => return Ok(true),
                Ok(_) => {}
                Err(_) => return Ok(true),
            }
        }
        let mut bytes = Vec::with_capacity(entry.content.len() + 40);
        if self.options.timestamps {
            bytes.extend_from_slice(entry.time.as_bytes());
            bytes.push(b' ');
        }
        bytes.extend_from_slice(entry.content);
        if entry.full {
            bytes.push(b'\n');
        }
        if let Some(left) = self.left.as_mut() {
            let n = usize::try_from(*left)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            self.out.write_all(&bytes[..n])?;
            *left -= n as u64;
            return Ok(*left > 0);
        }
        self.out.write_all(&bytes)?;
        Ok(true)
    }
}

/// The offset in `file` where the last `lines` lines start.
fn tail_offset(file: &mut File, lines: u64) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if lines == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut newlines = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    // A trailing newline ends the last line rather than starting an empty one.
    let mut skip_last = true;
    while pos > 0 {
        let step = (buf.len() as u64).min(pos);
        pos -= step;
        file.seek(SeekFrom::Start(pos))?;
        let chunk = &mut buf[..usize::try_from(step).unwrap_or(0)];
        file.read_exact(chunk)?;
        for i in (0..chunk.len()).rev() {
            if chunk[i] != b'\n' {
                continue;
            }
            if skip_last && pos + i as u64 == len - 1 {
                skip_last = false;
                continue;
            }
            newlines += 1;
            if newlines == lines {
                return Ok(pos + i as u64 + 1);
            }
        }
        skip_last = false;
    }
    Ok(0)
}

/// How often a followed file is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How often a followed container's state is checked.
const RUNNING_CHECK: Duration = Duration::from_secs(1);

/// Writes the log at `path` to `out` with `options`. With `follow`, keeps writing new lines
/// (flushing after each batch) until `running()` says the container stopped and the file
/// has been read to its end, or `client_gone()` says the client went away.
pub fn write_logs(
    path: &Path,
    options: &LogOptions,
    out: &mut dyn Write,
    running: &dyn Fn() -> bool,
    client_gone: &dyn Fn() -> bool,
) -> io::Result<()> {
    let mut file = File::open(path)?;
    let start = match options.tail_lines {
        Some(n) => tail_offset(&mut file, n)?,
        None => 0,
    };
    file.seek(SeekFrom::Start(start))?;
    let mut inode = file.metadata()?.ino();
    let mut reader = BufReader::new(file);
    let mut writer = Writer {
        out,
        options,
        left: options.limit_bytes,
    };
    let mut line = Vec::new();
    let mut last_check = Instant::now();
    let mut alive = true;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n > 0 && line.ends_with(b"\n") {
            if !writer.line(&line)? {
                return writer.out.flush();
            }
            continue;
        }
        if n > 0 && !options.follow {
            // The last line has no newline yet; show what there is, as upstream does.
            writer.line(&line)?;
        } else if n > 0 {
            // An unfinished line: read it again once it is complete.
            let back = i64::try_from(n).unwrap_or(0);
            reader.seek_relative(-back)?;
        }
        writer.out.flush()?;
        if !options.follow {
            return Ok(());
        }
        if client_gone() {
            return Ok(());
        }
        // At the end: rotated away? stopped?
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.ino() != inode {
                let file = File::open(path)?;
                inode = file.metadata()?.ino();
                reader = BufReader::new(file);
                continue;
            }
        }
        if !alive {
            return Ok(());
        }
        if last_check.elapsed() >= RUNNING_CHECK {
            last_check = Instant::now();
            // One more pass after the container stopped picks up its last lines.
            alive = running();
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const LOG: &str = "2026-01-01T00:00:01.000000001Z stdout F one\n\
2026-01-01T00:00:02Z stderr F two\n\
garbage\n\
2026-01-01T00:00:03Z stdout P thr\n\
2026-01-01T00:00:03.5Z stdout F ee\n\
2026-01-01T00:00:04Z stdout F four\n\
2026-01-01T00:00:05Z stdout P fi";

    fn run(options: LogOptions) -> String {
        let dir = std::env::temp_dir().join(format!("rkubelet-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:?}.log", std::thread::current().id()));
        std::fs::write(&path, LOG).unwrap();
        let mut out = Vec::new();
        write_logs(&path, &options, &mut out, &|| false, &|| false).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn request(query: &str) -> Request {
        let (path, query) = super::super::http::split_target(&format!("/x?{query}"));
        Request {
            method: "GET".into(),
            target: String::new(),
            path,
            query,
            headers: Vec::new(),
            keep_alive: true,
            remote: None,
        }
    }

    #[test]
    fn options_apply_as_upstream() {
        assert_eq!(run(LogOptions::default()), "one\ntwo\nthree\nfour\nfi");
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..LogOptions::default()
        };
        assert_eq!(run(tail(1)), "fi", "an unfinished last line counts");
        assert_eq!(run(tail(2)), "four\nfi", "tail counts file lines");
        assert_eq!(run(tail(0)), "");
        assert_eq!(run(tail(100)), "one\ntwo\nthree\nfour\nfi");
        let stamped = run(LogOptions {
            timestamps: true,
            tail_lines: Some(2),
            ..LogOptions::default()
        });
        assert_eq!(
            stamped,
            "2026-01-01T00:00:04Z four\n2026-01-01T00:00:05Z fi"
        );
        let since: Timestamp = "2026-01-01T00:00:02.5Z".parse().unwrap();
        let since = run(LogOptions {
            since_nanos: Some(since.as_nanosecond()),
            ..LogOptions::default()
        });
        assert_eq!(since, "three\nfour\nfi");
        let limited = run(LogOptions {
            limit_bytes: Some(6),
            ..LogOptions::default()
        });
        assert_eq!(limited, "one\ntw");
    }

    #[test]
    fn query_options_are_checked_by_name() {
        let o = LogOptions::from_request(&request(
            "follow=true&tailLines=1&timestamps=1&previous=true&limitBytes=10",
        ))
        .unwrap();
        assert!(o.follow && o.timestamps && o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(1), Some(10)));
        let e = LogOptions::from_request(&request("tailLines=x")).unwrap_err();
        assert!(e.starts_with("tailLines:"), "{e}");
        let e = LogOptions::from_request(&request("sinceTime=yesterday")).unwrap_err();
        assert!(e.starts_with("sinceTime:"), "{e}");
        assert!(LogOptions::from_request(&request("sinceSeconds=0")).is_err());
        assert!(LogOptions::from_request(&request(
            "sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z"
        ))
        .is_err());
        let o = LogOptions::from_request(&request("sinceSeconds=10")).unwrap();
        assert!(o.since_nanos.unwrap() < crate::server::stats::now().as_nanosecond());
    }

    #[test]
    fn follow_sees_new_lines_and_rotation_then_ends_when_stopped() {
        let dir = std::env::temp_dir().join(format!("rkubelet-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.log");
        std::fs::write(&path, "2026-01-01T00:00:01Z stdout F a\n").unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        struct Chan(std::sync::mpsc::Sender<Vec<u8>>);
        impl Write for Chan {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let _ = self.0.send(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let follower = {
            let (path, running) = (path.clone(), Arc::clone(&running));
            std::thread::spawn(move || {
                let options = LogOptions {
                    follow: true,
                    ..LogOptions::default()
                };
                write_logs(
                    &path,
                    &options,
                    &mut Chan(tx),
                    &|| running.load(Ordering::SeqCst),
                    &|| false,
                )
            })
        };
        let next = || String::from_utf8(rx.recv_timeout(Duration::from_secs(5)).unwrap()).unwrap();
        assert_eq!(next(), "a\n");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"2026-01-01T00:00:02Z stdout F b\n").unwrap();
        assert_eq!(next(), "b\n");
        std::fs::rename(&path, dir.join("0.log.20260101-000003")).unwrap();
        std::fs::write(&path, "2026-01-01T00:00:03Z stdout F c\n").unwrap();
        assert_eq!(next(), "c\n");
        running.store(false, Ordering::SeqCst);
        follower.join().unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
