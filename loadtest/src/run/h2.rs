//! The load generator's HTTP/2 side (h2c prior knowledge, or h2 after
//! ALPN): the h2 crate over monoio-compat, one task driving the
//! connection and one task per stream lane (`-m` of them).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite};

use super::pacer::Pacer;
use super::recorder::ErrorKind;
use super::schedule::Lane;
use super::session::{ConnGuard, SessionEnd, ThreadCtx};

fn kind(e: &h2::Error, guard: &ConnGuard) -> ErrorKind {
    if guard.timed_out() {
        ErrorKind::Timeout
    } else if e.is_io() || e.is_go_away() || (e.is_reset() && e.is_remote()) {
        ErrorKind::Reset
    } else {
        ErrorKind::Protocol
    }
}

/// The error ends the connection (not just one stream).
fn fatal(e: &h2::Error) -> bool {
    e.is_io() || e.is_go_away() || e.is_library()
}

/// Runs the h2 handshake and the stream lanes until the run ends or the
/// connection fails.
pub(super) async fn session<T>(
    io: T,
    ctx: &Rc<ThreadCtx>,
    guard: &Rc<ConnGuard>,
    lanes: &[Rc<Lane>],
    at: Instant,
) -> SessionEnd
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let plan = &ctx.plan;
    guard.arm(0, Instant::now() + plan.connect_timeout);
    let handshake = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, Bytes>(io)
        .await;
    guard.disarm(0);
    let (send, conn) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            ctx.error(ErrorKind::Connect, at, &format!("h2 handshake: {e}"));
            return SessionEnd::Failed;
        }
    };
    let driver = monoio::spawn(conn);
    let mut handles = Vec::with_capacity(lanes.len());
    for (slot, lane) in lanes.iter().enumerate() {
        handles.push(monoio::spawn(lane_loop(
            send.clone(),
            ctx.clone(),
            guard.clone(),
            slot,
            lane.clone(),
        )));
    }
    drop(send);
    let mut end = SessionEnd::Done;
    for h in handles {
        if h.await != SessionEnd::Done {
            end = SessionEnd::Reconnect;
        }
    }
    // With every sender gone the connection closes by itself; the bound is
    // for a server that never acknowledges.
    let _ = monoio::time::timeout(Duration::from_secs(1), driver).await;
    end
}

async fn lane_loop(
    mut send: SendRequest<Bytes>,
    ctx: Rc<ThreadCtx>,
    guard: Rc<ConnGuard>,
    slot: usize,
    lane: Rc<Lane>,
) -> SessionEnd {
    let plan = ctx.plan.clone();
    let s = &plan.schedule;
    let mut pacer = Pacer::new();
    loop {
        let intended = if s.rate.is_some() {
            let Some(due) = lane.next_due(s) else {
                return SessionEnd::Done;
            };
            let now = Instant::now();
            if now >= s.end {
                return SessionEnd::Done;
            }
            if due > now {
                pacer.wait_until(due).await;
            }
            lane.advance();
            Some(due)
        } else {
            if ctx.tickets.take(s, 1) == 0 {
                return SessionEnd::Done;
            }
            None
        };
        let started = Instant::now();
        let intended_at = intended.unwrap_or(started);
        guard.arm(slot, started + plan.timeout);
        let result = exchange(&mut send, &ctx).await;
        guard.disarm(slot);
        match result {
            Ok((status, body, sent)) => {
                // Closed loop measures from the moment the stream opened.
                let intended_at = intended.unwrap_or(sent);
                ctx.response(intended_at, sent, status, body);
            }
            Err(e) => {
                ctx.error(kind(&e, &guard), intended_at, &e);
                if fatal(&e) || guard.timed_out() {
                    return SessionEnd::Reconnect;
                }
            }
        }
    }
}

/// One request and its whole response: (status, body bytes, sent at).
async fn exchange(
    send: &mut SendRequest<Bytes>,
    ctx: &ThreadCtx,
) -> Result<(u16, u64, Instant), h2::Error> {
    let plan = &ctx.plan;
    let ready = send.clone().ready().await?;
    *send = ready;
    let sent = Instant::now();
    let request = match plan.template.h2_request(&plan.h2_uri) {
        Ok(r) => r,
        // Validated when the run was planned; a failure here is a bug, and
        // it is counted rather than allowed to panic.
        Err(_) => return Err(h2::Reason::INTERNAL_ERROR.into()),
    };
    let body = &plan.template.body;
    let (response, mut stream) = send.send_request(request, body.is_empty())?;
    if !body.is_empty() {
        stream.send_data(body.clone(), true)?;
    }
    let response = response.await?;
    let status = response.status().as_u16();
    let mut recv = response.into_body();
    let mut bytes = 0u64;
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    Ok((status, bytes, sent))
}
