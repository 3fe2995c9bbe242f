//! What each connection is doing, so that none is held forever: an IO
//! wrapper that sees a request head begin (and the HTTP/2 preface and first
//! SETTINGS arrive), a response body that marks the end of each request, and
//! the registry that caps open connections by shedding the longest idle one.
//!
//! hyper keeps one timer for "waiting for a head" and "idle between
//! requests" (hyperium/hyper#3828) and none while hyper-util detects the
//! protocol; like Go's `ReadHeaderTimeout`/`IdleTimeout`, the serve loop
//! keeps them apart with the phases recorded here.

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

/// Nothing of a request yet: no byte (HTTP/1) or no complete preface and
/// first SETTINGS (HTTP/2). Counts as idle when shedding.
const HANDSHAKE: u64 = 0;
/// Between requests (HTTP/1 keep-alive) or with no stream open (HTTP/2).
const IDLE: u64 = 1;
/// An HTTP/1 request head has begun and must complete in time.
const HEAD: u64 = 2;

// One word holds phase, requests in flight and when the phase began, so
// that the watchdog and the registry read a consistent picture without a
// lock: bits 0-1 phase, 2-23 requests in flight, 24-63 milliseconds since
// the server started.
const PHASE_MASK: u64 = 0b11;
const IN_FLIGHT_ONE: u64 = 1 << 2;
const IN_FLIGHT_MASK: u64 = ((1 << 22) - 1) << 2;
const SINCE_SHIFT: u32 = 24;

fn pack(phase: u64, in_flight: u64, since_ms: u64) -> u64 {
    phase | (in_flight & (IN_FLIGHT_MASK >> 2)) << 2 | since_ms << SINCE_SHIFT
}

/// The phase a connection is in, read from its state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A request (or HTTP/2 stream) is in flight: no deadline.
    Busy,
    /// Connected, nothing complete yet; `since` is when it connected.
    Handshake,
    /// No request in flight since `since`.
    Idle,
    /// An HTTP/1 request head began at `since` (or, for the first request,
    /// the connection opened then).
    Head,
}

/// The timeouts a connection lives by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// `HEADER_TIMEOUT`.
    pub header: Duration,
    /// `IDLE_TIMEOUT`.
    pub idle: Duration,
}

/// The shared record of one connection: written by its IO wrapper and its
/// responses, read by its watchdog and the registry.
#[derive(Debug)]
pub(crate) struct ConnState {
    word: AtomicU64,
    base: Instant,
    /// Responses the handler has produced that hyper has not sent whole.
    responding: AtomicU32,
    /// Milliseconds since `base` of the last write while a response was
    /// waiting, or of when the first of them became ready.
    progress_ms: AtomicU64,
    /// Response bodies waiting on their own source, not on the peer.
    body_waiting: AtomicU32,
    /// Woken when the registry sheds this connection.
    pub shed: Notify,
}

impl ConnState {
    /// A connection opened now; `base` is the server's start.
    pub(crate) fn new(base: Instant) -> Self {
        let state = Self {
            word: AtomicU64::new(0),
            base,
            responding: AtomicU32::new(0),
            progress_ms: AtomicU64::new(0),
            body_waiting: AtomicU32::new(0),
            shed: Notify::new(),
        };
        state
            .word
            .store(pack(HANDSHAKE, 0, state.now_ms()), Ordering::Relaxed);
        state
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX >> SINCE_SHIFT)
    }

    /// Applies `f` to the state word until it sticks; `f` returning `None`
    /// leaves it alone.
    fn update(&self, f: impl Fn(u64) -> Option<u64>) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, f);
    }

    /// The phase and when it began.
    pub(crate) fn phase(&self) -> (Phase, Instant) {
        let word = self.word.load(Ordering::Acquire);
        let since = self.base + Duration::from_millis(word >> SINCE_SHIFT);
        let phase = if word & IN_FLIGHT_MASK != 0 {
            Phase::Busy
        } else {
            match word & PHASE_MASK {
                HANDSHAKE => Phase::Handshake,
                HEAD => Phase::Head,
                _ => Phase::Idle,
            }
        };
        (phase, since)
    }

    /// Whether the registry may close this connection for a new one: no
    /// request in flight and none begun. Returns since when.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        match self.phase() {
            (Phase::Idle | Phase::Handshake, since) => Some(since),
            _ => None,
        }
    }

    /// A request reached the handler: its head is complete.
    pub(crate) fn request_started(&self) {
        self.word.fetch_add(IN_FLIGHT_ONE, Ordering::AcqRel);
    }

    /// A response was sent (or abandoned); the last one makes the
    /// connection idle from now.
    fn request_finished(&self) {
        let now = self.now_ms();
        self.update(|word| {
            let in_flight = (word & IN_FLIGHT_MASK) >> 2;
            Some(match in_flight {
                0 => word,
                1 => pack(IDLE, 0, now),
                _ => word - IN_FLIGHT_ONE,
            })
        });
    }

    /// HTTP/1 bytes arrived on a connection that had none yet: the first
    /// head has begun; its deadline stays the one counted from connecting.
    fn first_head_started(&self) {
        self.update(|word| (word & PHASE_MASK == HANDSHAKE).then_some(word - HANDSHAKE + HEAD));
    }

    /// HTTP/1 bytes arrived: if the connection was idle, a head begins now.
    /// Called on every read, so it only loads the word in the usual case.
    #[inline]
    fn bytes_read_h1(&self) {
        let word = self.word.load(Ordering::Relaxed);
        if word & (IN_FLIGHT_MASK | PHASE_MASK) == IDLE {
            let now = self.now_ms();
            self.update(|word| {
                (word & (IN_FLIGHT_MASK | PHASE_MASK) == IDLE).then_some(pack(HEAD, 0, now))
            });
        }
    }

    /// The HTTP/2 preface and first SETTINGS are in: idle until a stream.
    fn h2_established(&self) {
        let now = self.now_ms();
        self.update(|word| {
            (word & PHASE_MASK == HANDSHAKE).then_some(word & IN_FLIGHT_MASK | pack(IDLE, 0, now))
        });
    }

    /// A response is ready to go out: from now on the peer must keep
    /// taking it (an HTTP/2 peer could otherwise hold the stream, and so the
    /// connection, for ever by granting no flow-control window).
    fn response_ready(&self) {
        if self.responding.fetch_add(1, Ordering::AcqRel) == 0 {
            self.progress_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    fn response_done(&self) {
        self.responding.fetch_sub(1, Ordering::AcqRel);
    }

    /// Bytes went out: progress, if a response is waiting.
    #[inline]
    fn wrote(&self) {
        if self.responding.load(Ordering::Relaxed) != 0 {
            self.progress_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    /// A response body started (`true`) or stopped waiting on its own
    /// source; when it has something again, the peer's clock starts afresh.
    fn body_waiting(&self, waiting: bool) {
        if waiting {
            self.body_waiting.fetch_add(1, Ordering::AcqRel);
        } else {
            self.body_waiting.fetch_sub(1, Ordering::AcqRel);
            self.progress_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    /// Since when a ready response has waited for the peer without a byte
    /// going out; `None` when no response is waiting, or one is waiting on
    /// its own source (a proxied stream between chunks).
    pub(crate) fn stalled_since(&self) -> Option<Instant> {
        (self.responding.load(Ordering::Acquire) != 0
            && self.body_waiting.load(Ordering::Acquire) == 0)
            .then(|| self.base + Duration::from_millis(self.progress_ms.load(Ordering::Acquire)))
    }

    /// The deadline of the current phase, and the phase: `None` while busy.
    pub(crate) fn deadline(&self, timeouts: Timeouts) -> (Phase, Option<Instant>) {
        let (phase, since) = self.phase();
        let deadline = match phase {
            Phase::Busy => None,
            Phase::Handshake | Phase::Head => Some(since + timeouts.header),
            Phase::Idle => Some(since + timeouts.idle),
        };
        (phase, deadline)
    }
}

/// Decrements the connection's requests in flight when dropped, i.e. when
/// hyper has taken the whole response body or the request was abandoned.
#[derive(Debug)]
pub(crate) struct InFlight {
    state: Arc<ConnState>,
    responding: bool,
}

impl InFlight {
    /// Counts a request that has just reached the handler.
    pub(crate) fn start(state: &Arc<ConnState>) -> Self {
        state.request_started();
        Self {
            state: state.clone(),
            responding: false,
        }
    }

    /// The handler has produced its response.
    fn response_ready(&mut self) {
        self.responding = true;
        self.state.response_ready();
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.responding {
            self.state.response_done();
        }
        self.state.request_finished();
    }
}

/// A response body that holds its request's [`InFlight`] until hyper is
/// done with it.
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    body: B,
    in_flight: InFlight,
    /// The body itself has nothing to send yet (a proxied stream waiting on
    /// its source): the peer is not the one holding the response up.
    waiting: bool,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, mut in_flight: InFlight) -> Self {
        in_flight.response_ready();
        Self {
            body,
            in_flight,
            waiting: false,
        }
    }

    fn set_waiting(&mut self, waiting: bool) {
        if self.waiting != waiting {
            self.waiting = waiting;
            self.in_flight.state.body_waiting(waiting);
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        // A body that is all there (the services' own answers) is never
        // pending, so this costs them nothing.
        self.set_waiting(poll.is_pending());
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Preface plus the frame header of the SETTINGS frame that must follow.
const SNIFF_LEN: usize = PREFACE.len() + 9;
const SETTINGS: u8 = 0x4;

/// How far the wrapper has looked into the bytes read.
#[derive(Debug)]
enum Sniff {
    /// Collecting the first bytes: an HTTP/2 preface and SETTINGS header?
    Start {
        seen: [u8; SNIFF_LEN],
        len: usize,
    },
    /// HTTP/2: this many bytes of the first SETTINGS payload still to come.
    Settings {
        remaining: usize,
    },
    Http1,
    Http2,
}

/// A connection's socket, telling its [`ConnState`] when a request head
/// begins, when an HTTP/2 connection is established, and when a waiting
/// response makes progress. Reads and writes cost one atomic load beyond
/// the socket's own work.
#[derive(Debug)]
pub(crate) struct Watched<T> {
    io: T,
    state: Arc<ConnState>,
    sniff: Sniff,
}

impl<T> Watched<T> {
    pub(crate) fn new(io: T, state: Arc<ConnState>) -> Self {
        Self {
            io,
            state,
            sniff: Sniff::Start {
                seen: [0; SNIFF_LEN],
                len: 0,
            },
        }
    }

    fn on_read(&mut self, mut new: &[u8]) {
        loop {
            match &mut self.sniff {
                Sniff::Http1 => return self.state.bytes_read_h1(),
                Sniff::Http2 => return,
                Sniff::Start { seen, len } => {
                    let take = (SNIFF_LEN - *len).min(new.len());
                    seen[*len..*len + take].copy_from_slice(&new[..take]);
                    *len += take;
                    new = &new[take..];
                    let magic = (*len).min(PREFACE.len());
                    if seen[..magic] != PREFACE[..magic] {
                        self.sniff = Sniff::Http1;
                        return self.state.first_head_started();
                    }
                    if *len < SNIFF_LEN {
                        return;
                    }
                    let header = &seen[PREFACE.len()..];
                    if header[3] != SETTINGS {
                        // Not a valid preface: hyper refuses the connection.
                        self.sniff = Sniff::Http2;
                        return;
                    }
                    let remaining = usize::from(header[0]) << 16
                        | usize::from(header[1]) << 8
                        | usize::from(header[2]);
                    self.sniff = Sniff::Settings { remaining };
                }
                Sniff::Settings { remaining } => {
                    *remaining -= (*remaining).min(new.len());
                    if *remaining > 0 {
                        return;
                    }
                    self.sniff = Sniff::Http2;
                    return self.state.h2_established();
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let new = &buf.filled()[before..];
            if !new.is_empty() && !matches!(this.sniff, Sniff::Http2) {
                this.on_read(new);
            }
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.state.wrote();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.state.wrote();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The open connections, capped: at the cap a new connection takes the
/// place of the one idle longest (one that never sent a request counts as
/// idle), or is refused when none is idle.
#[derive(Debug)]
pub(crate) struct Registry {
    cap: usize,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
}

/// A connection's place in the [`Registry`], given up on drop.
#[derive(Debug)]
pub(crate) struct Admitted {
    id: u64,
    registry: Arc<Registry>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.registry.conns.lock() {
            conns.remove(&self.id);
        }
    }
}

/// What [`Registry::admit`] did.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Room enough.
    Admitted(Admitted),
    /// At the cap: this idle connection was told to close to make room.
    Shed(Admitted),
    /// At the cap with nothing idle.
    Full,
}

impl Registry {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Open connections now.
    pub(crate) fn len(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Registers a new connection, shedding the longest idle one at the cap.
    pub(crate) fn admit(self: &Arc<Self>, state: &Arc<ConnState>) -> Admission {
        let Ok(mut conns) = self.conns.lock() else {
            return Admission::Full;
        };
        let mut shed = None;
        if conns.len() >= self.cap {
            // A scan, but only at the cap and only per new connection.
            let victim = conns
                .iter()
                .filter_map(|(id, conn)| conn.idle_since().map(|since| (since, *id)))
                .min();
            let Some((_, id)) = victim else {
                return Admission::Full;
            };
            shed = conns.remove(&id);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        conns.insert(id, state.clone());
        drop(conns);
        let admitted = Admitted {
            id,
            registry: self.clone(),
        };
        match shed {
            Some(victim) => {
                victim.shed.notify_one();
                Admission::Shed(admitted)
            }
            None => Admission::Admitted(admitted),
        }
    }
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`
/// (`None` when unlimited or unreadable).
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The connections `requested` can have under a soft descriptor limit of
/// `soft`: a quarter of the descriptors (at least 32) stays free for what
/// the services open besides incoming connections - outbound connections
/// to the receiver, the metadata server and key endpoints, log and key
/// files - so that a full house of clients cannot starve those.
pub(crate) fn connection_cap(requested: usize, soft: Option<u64>) -> usize {
    let Some(soft) = soft else {
        return requested;
    };
    let room = soft.saturating_sub((soft / 4).max(32)).max(1);
    usize::try_from(room).map_or(requested, |room| requested.min(room))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(620),
        }
    }

    #[test]
    fn open_files_limit_is_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), None);
        assert!(open_files_limit().is_some());
    }

    #[test]
    fn the_cap_leaves_room_for_other_descriptors() {
        assert_eq!(connection_cap(10_000, None), 10_000);
        assert_eq!(connection_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(10_000, Some(1024)), 768);
        assert_eq!(connection_cap(100, Some(1024)), 100);
        assert_eq!(connection_cap(10_000, Some(64)), 32);
        assert_eq!(connection_cap(10_000, Some(10)), 1);
    }

    #[test]
    fn phases_follow_requests() {
        let state = Arc::new(ConnState::new(Instant::now()));
        assert_eq!(state.phase().0, Phase::Handshake);
        let mut io = Watched::new(tokio::io::empty(), state.clone());
        io.on_read(b"GET / HTTP/1.1\r\n");
        assert_eq!(state.phase().0, Phase::Head);
        let first = InFlight::start(&state);
        assert_eq!(state.deadline(timeouts()), (Phase::Busy, None));
        io.on_read(b"body bytes");
        assert_eq!(state.phase().0, Phase::Busy);
        drop(first);
        assert_eq!(state.phase().0, Phase::Idle);
        assert!(state.idle_since().is_some());
        io.on_read(b"GET");
        assert_eq!(state.phase().0, Phase::Head);
        assert!(state.idle_since().is_none());
    }

    #[test]
    fn http2_is_established_by_the_preface_and_first_settings() {
        let state = Arc::new(ConnState::new(Instant::now()));
        let mut io = Watched::new(tokio::io::empty(), state.clone());
        io.on_read(&PREFACE[..10]);
        io.on_read(&PREFACE[10..]);
        assert_eq!(state.phase().0, Phase::Handshake);
        // SETTINGS with one 6-byte setting, split across reads.
        io.on_read(&[0, 0, 6, SETTINGS, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(state.phase().0, Phase::Handshake);
        io.on_read(&[0, 0, 0, 100]);
        assert_eq!(state.phase().0, Phase::Idle);
        let a = InFlight::start(&state);
        let b = InFlight::start(&state);
        drop(a);
        assert_eq!(state.phase().0, Phase::Busy);
        drop(b);
        assert_eq!(state.phase().0, Phase::Idle);
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_is_shed() {
        let base = Instant::now();
        let registry = Registry::new(2);
        let old = Arc::new(ConnState::new(base));
        let busy = Arc::new(ConnState::new(base));
        let _a = registry.admit(&old);
        let _b = registry.admit(&busy);
        let _request = InFlight::start(&busy);
        let new = Arc::new(ConnState::new(base));
        let admitted = registry.admit(&new);
        assert!(matches!(admitted, Admission::Shed(_)));
        assert_eq!(registry.len(), 2);
        let _request = InFlight::start(&new);
        let another = Arc::new(ConnState::new(base));
        assert!(matches!(registry.admit(&another), Admission::Full));
    }
}
