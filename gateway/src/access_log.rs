//! The access log: one line per request, JSON or "combined", written by a
//! thread of its own from batches each worker fills in its own buffer, so
//! that no worker ever blocks on a disk. A full queue drops a batch (and
//! counts it) rather than stall a worker. SIGUSR1 reopens the file, for
//! log rotation.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{SystemTime, UNIX_EPOCH};

use ringway_config::{AccessLog, LogFormat};

use crate::trace::hex;

/// Batches queued for the writer at most.
const QUEUE: usize = 256;

enum Message {
    Lines(Vec<u8>),
    Reopen,
}

/// Where workers hand their lines.
#[derive(Debug, Clone)]
pub struct LogSink {
    sender: SyncSender<Message>,
    /// The line format.
    pub format: LogFormat,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Lines(l) => write!(f, "Lines({} bytes)", l.len()),
            Message::Reopen => f.write_str("Reopen"),
        }
    }
}

impl LogSink {
    /// Queues a batch of lines; false when the writer is behind and the
    /// batch was dropped.
    pub fn send(&self, lines: Vec<u8>) -> bool {
        !matches!(
            self.sender.try_send(Message::Lines(lines)),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
        )
    }

    /// Asks the writer to reopen its file (after rotation).
    pub fn reopen(&self) {
        let _ = self.sender.try_send(Message::Reopen);
    }
}

/// Starts the writer for `config`; it ends when every sink is dropped.
pub(crate) fn spawn_writer(config: &AccessLog) -> std::io::Result<LogSink> {
    let path = config.path.clone();
    let mut out = open(path.as_ref())?;
    let (sender, receiver) = sync_channel::<Message>(QUEUE);
    std::thread::Builder::new()
        .name("ringway-access-log".to_owned())
        .spawn(move || {
            for message in receiver {
                match message {
                    Message::Lines(lines) => {
                        let _ = out.write_all(&lines);
                    }
                    Message::Reopen => match open(path.as_ref()) {
                        Ok(reopened) => out = reopened,
                        Err(e) => crate::say!("ringway: cannot reopen the access log: {e}"),
                    },
                }
            }
        })?;
    Ok(LogSink {
        sender,
        format: config.format,
    })
}

fn open(path: Option<&PathBuf>) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match path {
        None => Box::new(std::io::stdout()),
        Some(p) => Box::new(OpenOptions::new().create(true).append(true).open(p)?) as Box<File>,
    })
}

/// What one line says.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    /// When the request began.
    pub time: SystemTime,
    /// The client.
    pub client: SocketAddr,
    /// Method, host and target as sent.
    pub method: &'a str,
    /// Host.
    pub host: &'a str,
    /// Target.
    pub target: &'a str,
    /// Status answered (0: none).
    pub status: u16,
    /// Bytes in and out.
    pub bytes_in: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// The endpoint that answered.
    pub upstream: Option<SocketAddr>,
    /// Time to the upstream's response head.
    pub upstream_micros: Option<u64>,
    /// Whole request time.
    pub duration_micros: u64,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// Trace id.
    pub trace_id: Option<[u8; 16]>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'a str,
    /// `Referer` (empty: none; only filled for the combined format).
    pub referer: &'a str,
    /// `User-Agent` (empty: none; only filled for the combined format).
    pub user_agent: &'a str,
}

/// Appends one line for `e` to `out`.
pub(crate) fn write_line(out: &mut Vec<u8>, format: LogFormat, e: &Entry<'_>) {
    match format {
        LogFormat::Json => {
            out.extend_from_slice(b"{\"time\":\"");
            rfc3339(e.time, out);
            let _ = write!(out, "\",\"client\":\"{}\",\"method\":", e.client);
            json_str(e.method, out);
            out.extend_from_slice(b",\"host\":");
            json_str(e.host, out);
            out.extend_from_slice(b",\"path\":");
            json_str(e.target, out);
            let _ = write!(
                out,
                ",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"upstream\":",
                e.status, e.bytes_in, e.bytes_out
            );
            match e.upstream {
                Some(u) => {
                    let _ = write!(out, "\"{u}\"");
                }
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"upstream_time_ms\":");
            match e.upstream_micros {
                Some(m) => {
                    let _ = write!(out, "{:.3}", m as f64 / 1000.0);
                }
                None => out.extend_from_slice(b"null"),
            }
            let _ = write!(
                out,
                ",\"duration_ms\":{:.3},\"request_id\":",
                e.duration_micros as f64 / 1000.0
            );
            json_str(e.request_id, out);
            out.extend_from_slice(b",\"trace_id\":");
            match e.trace_id {
                Some(t) => {
                    out.push(b'"');
                    hex(&t, out);
                    out.push(b'"');
                }
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b"}\n");
        }
        LogFormat::Combined => {
            let _ = write!(out, "{} - - [", e.client.ip());
            clf_time(e.time, out);
            // nginx's "combined": `-` for an absent field, quotes and
            // control characters escaped so that a line stays one line.
            fn or_dash(s: &str) -> &str {
                if s.is_empty() { "-" } else { s }
            }
            let _ = writeln!(
                out,
                "] \"{} {} {}\" {} {} \"{}\" \"{}\"",
                e.method.escape_debug(),
                e.target.escape_debug(),
                e.protocol,
                e.status,
                e.bytes_out,
                or_dash(e.referer).escape_debug(),
                or_dash(e.user_agent).escape_debug(),
            );
        }
    }
}

fn json_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn civil(time: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis(),
    )
}

fn rfc3339(time: SystemTime, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, ms) = civil(time);
    let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
}

fn clf_time(time: SystemTime, out: &mut Vec<u8>) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(time);
    let month = MONTHS[(mo as usize).saturating_sub(1) % 12];
    let _ = write!(out, "{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_format_as_rfc3339_and_clf() {
        // 2026-11-26T07:41:08.250Z
        let t = UNIX_EPOCH + Duration::from_millis(1_795_678_868_250);
        let mut out = Vec::new();
        rfc3339(t, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "2026-11-26T07:41:08.250Z");
        let mut out = Vec::new();
        clf_time(t, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "26/Nov/2026:07:41:08 +0000"
        );
        let mut out = Vec::new();
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400), &mut out); // leap day
        assert_eq!(String::from_utf8(out).unwrap(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn json_lines_escape_what_the_network_sent() {
        let e = Entry {
            time: UNIX_EPOCH,
            client: "127.0.0.1:5000".parse().unwrap(),
            method: "GET",
            host: "a\"b",
            target: "/x\\y\u{1}",
            status: 200,
            bytes_in: 10,
            bytes_out: 20,
            upstream: None,
            upstream_micros: Some(1500),
            duration_micros: 2500,
            request_id: "id",
            trace_id: None,
            protocol: "HTTP/1.1",
            referer: "",
            user_agent: "",
        };
        let mut out = Vec::new();
        write_line(&mut out, LogFormat::Json, &e);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.contains(r#""host":"a\"b","path":"/x\\y\u0001""#),
            "{line}"
        );
        assert!(
            line.contains(r#""upstream":null,"upstream_time_ms":1.500,"duration_ms":2.500"#),
            "{line}"
        );
        assert!(line.ends_with("}\n"));
    }

    #[test]
    fn combined_lines_carry_the_protocol_referer_and_agent_escaped() {
        let e = Entry {
            time: UNIX_EPOCH,
            client: "127.0.0.1:5000".parse().unwrap(),
            method: "GET",
            host: "a",
            target: "/x",
            status: 200,
            bytes_in: 10,
            bytes_out: 20,
            upstream: None,
            upstream_micros: None,
            duration_micros: 2500,
            request_id: "id",
            trace_id: None,
            protocol: "HTTP/2.0",
            referer: "",
            user_agent: "curl \"8\"\n",
        };
        let mut out = Vec::new();
        write_line(&mut out, LogFormat::Combined, &e);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.ends_with(&(r#""GET /x HTTP/2.0" 200 20 "-" "curl \"8\"\n""#.to_owned() + "\n")),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);
    }
}
