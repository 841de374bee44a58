//! The consumer connection's socket, waited on by lapin's I/O thread itself while messages flow.
//!
//! lapin runs its I/O loop on a thread of its own and learns that the socket has data from a
//! reactor. With tokio's, every burst from the broker wakes a tokio thread first, which then wakes
//! the I/O thread: one thread woken more per few messages at prefetch 10, 2.8 of the 17 us of CPU
//! a Ruby worker spent per message there (docs/performance.md). [`DirectKit`] is lapin's tokio
//! runtime with one change: its sockets are [`DirectStream`]s. While data keeps coming (the last
//! read less than [`HOT`] ago), a `DirectStream` that has nothing to read waits in
//! `epoll_wait(2)` on the I/O thread, for the socket or for a [`Nudge`]. Once the socket has been
//! quiet for [`HOT`], it goes back to tokio's reactor, so an idle connection costs no wake-ups.
//!
//! While the I/O thread waits there, it does not see the frames other threads queue. Any frame
//! queued through lapin (a heartbeat, Maxretry's republish, a declaration made while messages
//! flow) waits for the next read or for [`HOT`] at the longest, unless its sender nudges.
//!
//! Settlements do not go through lapin on plain TCP: the settler writes its ack, nack and reject
//! frames to the socket itself ([`Wire::send_frames`]), between two of lapin's frames, so the
//! broker has them without waking the I/O thread (which used to wake, serialize and write for
//! every batch of acks). The stream follows lapin's output frame by frame ([`FrameCursor`]); when
//! lapin is in the middle of a frame, or the socket is full, the settlement frames wait in
//! [`Wire`] and the I/O thread writes them at the next frame boundary, in the order they came.
//!
//! Deliveries do not go through lapin either on plain TCP: what the socket reads passes through
//! a [`Demux`](crate::inbound::Demux) (inbound.rs), which keeps the consuming channels'
//! deliveries for their work threads and gives lapin every other frame. A host thread with
//! nothing to do waits on the socket in the I/O thread's place and reads it itself (reader.rs);
//! the I/O thread then only wakes when no host thread waits, or every [`HOT`] to let lapin write.
//!
//! With `amqps://`, lapin's TLS stream wraps the `DirectStream` (tests/tls.rs runs a consumer
//! through a TLS proxy, including a reconnection).

use crate::inbound::{Inbox, Inboxes};
use crate::lock;
use crate::reader::{epoll_for, epoll_wait, eventfd, Reader};
use async_rs::traits::{Executor, Reactor, RuntimeKit};
use async_rs::util::Task;
use async_rs::Tokio;
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::Stream;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;

/// How long after the last read the I/O thread keeps waiting on the socket itself. Longer than
/// the gap between deliveries of a steady flow (0.5 ms at 2,000 msg/s), short enough to bound the
/// delay of a frame nobody nudged for.
const HOT: Duration = Duration::from_millis(1);

/// Wakes a connection's I/O thread out of its wait on the socket: frames were queued for it.
pub(crate) struct Nudge {
    /// An eventfd, written when the I/O thread waits. Never read: the thread's epoll set
    /// watches it edge-triggered, so every write is one event however high the count.
    event: OwnedFd,
    /// The I/O thread is in (or entering) its wait on the socket.
    parked: AtomicBool,
    /// Frames were queued since the I/O thread last looked.
    nudged: AtomicBool,
}

impl fmt::Debug for Nudge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nudge").finish_non_exhaustive()
    }
}

impl Nudge {
    fn new() -> io::Result<Self> {
        Ok(Nudge {
            event: eventfd()?,
            parked: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
        })
    }

    /// Called after queueing frames for lapin. A syscall only when the I/O thread waits on the socket: the
    /// flag and `parked` are both sequentially consistent, so either the thread sees the flag
    /// before it parks or this sees it parked.
    pub(crate) fn wake(&self) {
        if !self.nudged.swap(true, SeqCst) && self.parked.load(SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to our eventfd. (Its count would
            // take centuries of writes to fill.)
            unsafe { libc::write(self.event.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    fn take(&self) -> bool {
        self.nudged.swap(false, SeqCst)
    }
}

/// Follows a stream of AMQP frames (as lapin writes them) to tell whether it stands between two
/// of them. The stream opens with the 8-byte protocol header; every frame after it is a 7-byte
/// header whose last 4 bytes give the payload's size, the payload, and a frame-end byte.
#[derive(Debug)]
struct FrameCursor {
    /// Bytes left of the current frame once its header is complete (or of the protocol header).
    rest: usize,
    /// The current frame's header, as far as it has been written.
    head: [u8; 7],
    have: usize,
}

impl FrameCursor {
    fn new() -> Self {
        FrameCursor {
            rest: 8,
            head: [0; 7],
            have: 0,
        }
    }

    fn at_boundary(&self) -> bool {
        self.rest == 0 && self.have == 0
    }

    /// How many bytes can be written without passing the next boundary (the rest of an
    /// unfinished header first, when its size is not known yet).
    fn short_of_boundary(&self) -> usize {
        if self.rest > 0 {
            self.rest
        } else {
            7 - self.have
        }
    }

    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.rest > 0 {
                let n = self.rest.min(bytes.len());
                self.rest -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (7 - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 7 {
                let size =
                    u32::from_be_bytes([self.head[3], self.head[4], self.head[5], self.head[6]]);
                self.rest = size as usize + 1;
                self.have = 0;
            }
        }
    }
}

/// One consumer connection's way out, shared by its socket and the settlers of its channels:
/// the [`Nudge`], and on plain TCP the socket itself for settlement frames (module docs).
pub(crate) struct Wire {
    nudge: Nudge,
    out: Mutex<Out>,
    /// The consuming channels whose deliveries the socket's demux takes (plain TCP only).
    inboxes: Arc<Inboxes>,
    /// The socket's read side, shared with host threads (plain TCP only; reader.rs).
    reader: Mutex<Option<Arc<Reader>>>,
}

#[derive(Debug)]
struct Out {
    /// The connection's socket, while it is open and carries plain AMQP (not TLS).
    socket: Option<Arc<TcpStream>>,
    /// Where lapin's output stands.
    cursor: FrameCursor,
    /// Settlement frames not written yet, in order.
    held: Vec<u8>,
    /// The first of `held` was partly written: nothing else may go out before its rest.
    started: bool,
    /// The I/O loop's waker from its last read: wakes lapin's loop when frames are held while
    /// its thread sleeps elsewhere than on the socket.
    waker: Option<Waker>,
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wire").finish_non_exhaustive()
    }
}

impl Wire {
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(Wire {
            nudge: Nudge::new()?,
            out: Mutex::new(Out {
                socket: None,
                cursor: FrameCursor::new(),
                held: Vec::new(),
                started: false,
                waker: None,
            }),
            inboxes: Arc::new(Inboxes::default()),
            reader: Mutex::new(None),
        }))
    }

    /// The socket's read side while it is open and carries plain AMQP.
    pub(crate) fn reader(&self) -> Option<Arc<Reader>> {
        lock(&self.reader).clone()
    }

    /// A host thread read frames for lapin, or the end of the stream: the I/O thread must
    /// look, wherever it sleeps.
    pub(crate) fn wake_io_thread(&self) {
        let waker = self.out().waker.clone();
        self.nudge.wake();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes `channel`'s deliveries off the socket from now on, on plain TCP (inbound.rs); call
    /// before its `basic.consume`. `None` with TLS (or once the socket is gone): lapin's
    /// consumer receives them.
    pub(crate) fn consume(&self, channel: u16) -> Option<Arc<Inbox>> {
        let out = self.out();
        out.socket.as_ref()?;
        Some(self.inboxes.open(channel))
    }

    /// Wakes the I/O thread out of its wait on the socket (see [`Nudge::wake`]).
    pub(crate) fn nudge(&self) {
        self.nudge.wake();
    }

    fn out(&self) -> MutexGuard<'_, Out> {
        // Every change leaves `Out` consistent before anything can panic.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends whole AMQP frames on the socket, from the calling thread, after every frame already
    /// given here and between two of lapin's. Returns false, sending nothing, when the
    /// connection has no plain socket (TLS, or closed): queue them through lapin instead.
    pub(crate) fn send_frames(&self, frames: &[u8]) -> bool {
        let mut out = self.out();
        let Some(socket) = out.socket.clone() else {
            return false;
        };
        if out.held.is_empty() && out.cursor.at_boundary() {
            match write_some(&socket, frames) {
                Ok(n) if n == frames.len() => return true,
                Ok(n) => {
                    out.held.extend_from_slice(&frames[n..]);
                    out.started = n > 0;
                }
                // The connection is failing: lapin's next read or write finds out and recovery
                // begins; the broker requeues what these frames would have settled.
                Err(e) => {
                    log::debug!("settlement frames not sent: {e}");
                    return true;
                }
            }
        } else {
            out.held.extend_from_slice(frames);
        }
        // Held: the I/O thread writes them at its next boundary. Wake it wherever it sleeps.
        let waker = out.waker.clone();
        drop(out);
        self.nudge.wake();
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

/// Writes what the nonblocking socket takes now: `Ok(0)` when it takes nothing.
fn write_some(mut socket: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        return match socket.write(bytes) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        };
    }
}

impl Out {
    /// Writes the held frames if they may go now. Returns false while some are left.
    fn flush_held(&mut self) -> io::Result<bool> {
        if self.held.is_empty() {
            return Ok(true);
        }
        if !self.started && !self.cursor.at_boundary() {
            return Ok(false);
        }
        let Some(socket) = self.socket.clone() else {
            self.held.clear();
            return Ok(true);
        };
        let n = write_some(&socket, &self.held)?;
        self.held.drain(..n);
        self.started = !self.held.is_empty() && (self.started || n > 0);
        Ok(self.held.is_empty())
    }
}

/// lapin's tokio runtime, whose TCP connections are [`DirectStream`]s sharing one [`Wire`]
/// (one kit per connection).
#[derive(Clone, Debug)]
pub(crate) struct DirectKit {
    tokio: Tokio,
    handle: Handle,
    wire: Arc<Wire>,
    /// The connection is plain AMQP: settlers may write frames to the socket (with TLS, lapin
    /// wraps the stream, and only lapin may write to it).
    plain: bool,
}

impl DirectKit {
    /// Binds to the current tokio runtime: call from inside it.
    pub(crate) fn current(wire: Arc<Wire>, plain: bool) -> Self {
        DirectKit {
            tokio: Tokio::current(),
            handle: Handle::current(),
            wire,
            plain,
        }
    }
}

impl RuntimeKit for DirectKit {}

impl Executor for DirectKit {
    type Task<T: Send + 'static> = <Tokio as Executor>::Task<T>;

    fn block_on<T, F: Future<Output = T>>(&self, f: F) -> T {
        self.tokio.block_on(f)
    }

    fn spawn<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        f: F,
    ) -> Task<Self::Task<T>> {
        self.tokio.spawn(f)
    }

    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        f: F,
    ) -> Task<Self::Task<T>> {
        self.tokio.spawn_blocking(f)
    }
}

impl Reactor for DirectKit {
    type TcpStream = DirectStream;
    type Sleep = <Tokio as Reactor>::Sleep;

    fn register<H: Read + Write + AsFd + AsRawFd + Send + 'static>(
        &self,
        socket: H,
    ) -> io::Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
        self.tokio.register(socket)
    }

    fn sleep(&self, dur: Duration) -> Self::Sleep {
        self.tokio.sleep(dur)
    }

    fn interval(&self, dur: Duration) -> impl Stream<Item = Instant> + Send + 'static {
        self.tokio.interval(dur)
    }

    fn tcp_connect_addr(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<DirectStream>> + Send + 'static {
        let handle = self.handle.clone();
        let wire = self.wire.clone();
        let plain = self.plain;
        async move {
            // Connect on the runtime (lapin polls this from its own thread), then take the
            // socket off tokio's reactor: DirectStream registers it only while idle.
            let socket = handle
                .spawn(async move {
                    let stream = tokio::net::TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    stream.into_std()
                })
                .await
                .map_err(io::Error::other)??;
            let socket = Arc::new(socket);
            // On plain TCP the reader keeps the I/O thread's epoll set: host threads take the
            // socket out of it while one of them watches (reader.rs).
            let (reader, poller) = match plain {
                true => {
                    let reader =
                        Reader::new(socket.clone(), wire.inboxes.clone(), &wire.nudge.event)?;
                    let poller = reader.io_poller();
                    (Some(Arc::new(reader)), poller)
                }
                false => (None, Arc::new(epoll_for(&socket, &wire.nudge.event, true)?)),
            };
            if plain {
                let mut out = wire.out();
                out.socket = Some(socket.clone());
                out.cursor = FrameCursor::new();
                out.held.clear();
                out.started = false;
                wire.inboxes.clear();
                drop(out);
                *lock(&wire.reader) = reader.clone();
            }
            Ok(DirectStream {
                reader,
                reactor: None,
                poller,
                socket,
                handle,
                wire,
                fresh: false,
                drained: false,
                last_read: Instant::now(),
                write_blocked: false,
            })
        }
    }
}

/// A descriptor registered with tokio's reactor without being owned by it.
struct Registered(RawFd);

impl AsRawFd for Registered {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// What ended a wait on the socket.
#[derive(Debug, PartialEq)]
enum Woke {
    /// The socket is readable (or closed, or failed: the read says which), or the wait was cut
    /// short: read again.
    Socket,
    /// Frames were queued: let lapin write them.
    Nudged,
    /// Quiet for [`HOT`]: wait on the reactor.
    Quiet,
}

/// A nonblocking TCP socket that lapin's I/O thread waits on itself while data flows, and tokio's
/// reactor waits on while it is idle (see the module's documentation).
pub(crate) struct DirectStream {
    /// Registered with tokio while idle (or while a write waits for room); dropping it
    /// deregisters the socket, so data arriving while hot wakes no tokio thread. Declared before
    /// `socket`, so it is dropped first.
    reactor: Option<AsyncFd<Registered>>,
    /// The I/O thread's own epoll set: the socket (exclusively, after the host threads' set;
    /// on plain TCP only while no host thread watches it, reader.rs) and the nudge,
    /// edge-triggered (see [`Nudge`]).
    poller: Arc<OwnedFd>,
    /// Shared with [`Wire`] on plain TCP, for the settlers' frames.
    socket: Arc<TcpStream>,
    /// On plain TCP: what is read goes through its demux, and lapin reads what that passes on.
    reader: Option<Arc<Reader>>,
    handle: Handle,
    wire: Arc<Wire>,
    /// Bytes were read since lapin last saw `Pending`.
    fresh: bool,
    /// The last read found the socket empty (or did not fill the buffer), and nothing said it
    /// has data since.
    drained: bool,
    /// When this thread's last read found data; used with TLS only (see `last_read()`).
    last_read: Instant,
    /// A write found the send buffer full: only the reactor reports room, so stay on it.
    write_blocked: bool,
}

impl DirectStream {
    fn reactor(&mut self) -> io::Result<&AsyncFd<Registered>> {
        if self.reactor.is_none() {
            let _runtime = self.handle.enter();
            // SAFETY: the descriptor is `socket`'s, which outlives the registration: `reactor`
            // is declared (so dropped) before `socket`.
            let registered = unsafe { AsyncFd::register(Registered(self.socket.as_raw_fd())) };
            self.reactor = Some(registered?);
        }
        Ok(self.reactor.as_ref().expect("registered above"))
    }

    fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_held(cx)?;
        loop {
            if let Some(reader) = &self.reader {
                let mut demux = reader.demux();
                if demux.has_pass() {
                    self.fresh = true;
                    return Poll::Ready(Ok(demux.give(bufs)));
                }
            }
            if !self.drained {
                let read = match &self.reader {
                    // The deliveries read go to host threads from here; lapin gets the rest.
                    Some(reader) => reader.demux().read_from(&self.socket),
                    None => (&*self.socket)
                        .read_vectored(bufs)
                        .map(|n| (n, bufs.iter().map(|b| b.len()).sum())),
                };
                match read {
                    Ok((n, room)) => {
                        // A read that did not fill the buffer took all there was (as tokio
                        // assumes too): the next call waits rather than read in vain.
                        self.drained = n < room;
                        if n > 0 && self.reader.is_none() {
                            // On plain TCP the demux notes every read, a host thread's too.
                            self.last_read = Instant::now();
                        }
                        if let Some(reader) = &self.reader {
                            if n > 0 {
                                continue;
                            }
                            // The end of the stream: host threads stop watching it.
                            reader.close();
                        }
                        self.fresh = true;
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                    Err(e) => {
                        if let Some(reader) = &self.reader {
                            reader.close();
                        }
                        return Poll::Ready(Err(e));
                    }
                }
            }
            if self.fresh {
                // lapin reads until it is told to wait and only then parses: let it parse what
                // it has and come back, to the wait below.
                self.fresh = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let quiet_for = self.last_read().elapsed();
            if !self.write_blocked && quiet_for < HOT {
                self.reactor = None;
                match self.wait_here(HOT - quiet_for)? {
                    Woke::Socket => {
                        self.drained = false;
                        continue;
                    }
                    Woke::Nudged => {
                        // lapin writes what was queued, then comes back to wait.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    // A host thread read meanwhile (reader.rs): data still flows, so stay off the
                    // reactor, but let lapin write what it may have queued before waiting again.
                    Woke::Quiet if self.last_read().elapsed() < HOT => {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Woke::Quiet => {}
                }
            }
            match self.reactor()?.poll_read_ready(cx) {
                Poll::Ready(Ok(mut ready)) => {
                    ready.clear_ready();
                    self.drained = false;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Called before each read: writes the settlement frames held in [`Wire`] if they may go
    /// (lapin's writes send them too, after a frame they complete). A full socket keeps the
    /// stream on the reactor, which wakes the loop when there is room.
    fn write_held(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let wire = self.wire.clone();
        let mut out = wire.out();
        if out.socket.is_none() {
            return Ok(());
        }
        if !out.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            out.waker = Some(cx.waker().clone());
        }
        while !out.flush_held()? && (out.started || out.cursor.at_boundary()) {
            self.write_blocked = true;
            match self.reactor()?.poll_write_ready(cx) {
                Poll::Ready(Ok(mut ready)) => ready.clear_ready(),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Writes lapin's bytes, after any settlement frames that were waiting for a boundary and
    /// before any that wait for this write to complete a frame.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let wire = self.wire.clone();
        loop {
            let mut out = wire.out();
            let result = if out.flush_held()? {
                (&*self.socket).write_vectored(bufs)
            } else if out.started || out.cursor.at_boundary() {
                // Our frames come next (half out, or the socket had no room for them): lapin's
                // bytes may not come before them.
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                // Held frames go at the next boundary, before any frame lapin queued after
                // them (a channel.close after the nacks of a stop): write up to there only.
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                let upto = first.len().min(out.cursor.short_of_boundary());
                (&*self.socket).write(&first[..upto])
            };
            match result {
                Ok(n) => {
                    if out.socket.is_some() {
                        let mut left = n;
                        for buf in bufs {
                            let take = left.min(buf.len());
                            out.cursor.advance(&buf[..take]);
                            left -= take;
                        }
                        // Frames held for this boundary go now; what the socket refuses waits
                        // for the next write or read.
                        out.flush_held()?;
                    }
                    self.write_blocked = false;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            drop(out);
            self.write_blocked = true;
            match self.reactor()?.poll_write_ready(cx) {
                Poll::Ready(Ok(mut ready)) => ready.clear_ready(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// When the socket last had data: on plain TCP as the demux saw it, whichever thread read
    /// (this one or a host thread); with TLS as this thread's reads saw it.
    fn last_read(&self) -> Instant {
        match &self.reader {
            Some(reader) => reader.demux().read_at(),
            None => self.last_read,
        }
    }

    /// Waits up to `timeout` for the socket or a nudge, on the calling (I/O) thread.
    fn wait_here(&self, timeout: Duration) -> io::Result<Woke> {
        let nudge = &self.wire.nudge;
        nudge.parked.store(true, SeqCst);
        if nudge.take() {
            nudge.parked.store(false, SeqCst);
            return Ok(Woke::Nudged);
        }
        // (A signal that cuts the wait short counts as the socket: it is read again.)
        let ready = epoll_wait(&self.poller, timeout);
        nudge.parked.store(false, SeqCst);
        let ready = ready?;
        if nudge.take() {
            Ok(Woke::Nudged)
        } else if ready {
            // The socket, or an eventfd edge whose nudge an earlier look took: read again.
            Ok(Woke::Socket)
        } else {
            Ok(Woke::Quiet)
        }
    }
}

impl Drop for DirectStream {
    /// The settlers' frames stop here: the socket closes with the stream.
    fn drop(&mut self) {
        let mut out = self.wire.out();
        if out
            .socket
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &self.socket))
        {
            out.socket = None;
            out.held.clear();
            out.started = false;
            out.waker = None;
        }
        drop(out);
        if let Some(reader) = self.reader.take() {
            reader.close();
            let mut shared = lock(&self.wire.reader);
            if shared.as_ref().is_some_and(|r| Arc::ptr_eq(r, &reader)) {
                *shared = None;
            }
        }
    }
}

impl AsyncRead for DirectStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_read_with(cx, &mut [IoSliceMut::new(buf)])
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_with(cx, bufs)
    }
}

impl AsyncWrite for DirectStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TCP has no user-space buffer to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.socket.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::{mpsc, Mutex};
    use std::task::Wake;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A `DirectStream` connected to a local listener, and the listener's end.
    fn pair(rt: &tokio::runtime::Runtime) -> (DirectStream, TcpStream, Arc<Wire>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let wire = Wire::new().unwrap();
        let kit = rt.block_on(async { DirectKit::current(wire.clone(), true) });
        let stream = rt.block_on(kit.tcp_connect_addr(addr)).unwrap();
        let (peer, _) = listener.accept().unwrap();
        (stream, peer, wire)
    }

    /// A frame of `payload` bytes (its type and channel do not matter here).
    fn frame(payload: usize) -> Vec<u8> {
        let mut f = vec![1, 0, 1];
        f.extend_from_slice(&(payload as u32).to_be_bytes());
        f.extend(std::iter::repeat_n(7u8, payload));
        f.push(0xCE);
        f
    }

    /// Writes `bytes` as lapin does, through poll_write, until all are written.
    fn write_all(rt: &tokio::runtime::Runtime, stream: &mut DirectStream, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = rt
                .block_on(std::future::poll_fn(|cx| {
                    Pin::new(&mut *stream).poll_write(cx, bytes)
                }))
                .unwrap();
            bytes = &bytes[n..];
        }
    }

    fn read_exactly(peer: &mut TcpStream, n: usize) -> Vec<u8> {
        peer.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut got = vec![0; n];
        peer.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn the_frame_cursor_finds_frame_boundaries_however_the_bytes_are_split() {
        let mut stream = b"AMQP\x00\x00\x09\x01".to_vec();
        let mut ends = vec![stream.len()];
        for payload in [0, 13, 300] {
            stream.extend(frame(payload));
            ends.push(stream.len());
        }
        for piece in [1, 2, 3, 7, 8, 64, stream.len()] {
            let mut cursor = FrameCursor::new();
            assert!(!cursor.at_boundary(), "the protocol header comes first");
            let mut at = 0;
            for chunk in stream.chunks(piece) {
                cursor.advance(chunk);
                at += chunk.len();
                if ends.contains(&at) {
                    assert!(
                        cursor.at_boundary(),
                        "a boundary at {at} (pieces of {piece})"
                    );
                } else if !ends.iter().any(|&e| e > at - chunk.len() && e < at) {
                    assert!(
                        !cursor.at_boundary(),
                        "no boundary at {at} (pieces of {piece})"
                    );
                }
            }
            assert!(cursor.at_boundary());
        }
    }

    #[test]
    fn settlement_frames_go_out_between_lapins_frames_in_order() {
        let rt = runtime();
        let (mut stream, mut peer, wire) = pair(&rt);
        let header = b"AMQP\x00\x00\x09\x01";
        write_all(&rt, &mut stream, header);

        // Between two frames: straight to the socket.
        let ack = frame(13);
        assert!(wire.send_frames(&ack));
        assert_eq!(
            read_exactly(&mut peer, 16),
            [&header[..], &ack[..8]].concat()
        );
        assert_eq!(read_exactly(&mut peer, ack.len() - 8), ack[8..]);

        // lapin is half-way through a frame: the settlement frames wait for its end, in order,
        // and go before the frames lapin queued after them (written with that end, in one go).
        let big = frame(100);
        write_all(&rt, &mut stream, &big[..50]);
        let (first, second) = (frame(13), {
            let mut f = frame(13);
            f[20] = 9;
            f
        });
        assert!(wire.send_frames(&first));
        assert!(wire.send_frames(&second));
        assert_eq!(read_exactly(&mut peer, 50), big[..50]);
        let next = frame(30);
        write_all(&rt, &mut stream, &[&big[50..], &next[..]].concat());
        let expected = [&big[50..], &first[..], &second[..], &next[..]].concat();
        assert_eq!(read_exactly(&mut peer, expected.len()), expected);

        // Once the stream is gone, the settler is told to go through lapin.
        drop(stream);
        assert!(!wire.send_frames(&first));
    }

    #[test]
    fn a_tls_connection_takes_no_settlement_frames_from_the_settler() {
        let rt = runtime();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let wire = Wire::new().unwrap();
        let kit = rt.block_on(async { DirectKit::current(wire.clone(), false) });
        let _stream = rt
            .block_on(kit.tcp_connect_addr(listener.local_addr().unwrap()))
            .unwrap();
        assert!(!wire.send_frames(&frame(13)));
    }

    struct Signal(Mutex<mpsc::Sender<()>>);

    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            let _ = self.0.lock().unwrap().send(());
        }
    }

    #[test]
    fn a_quiet_socket_waits_on_the_reactor_which_wakes_the_reader() {
        let rt = runtime();
        let (mut stream, mut peer, _wire) = pair(&rt);
        let (tx, woken) = mpsc::channel();
        let waker = std::task::Waker::from(Arc::new(Signal(Mutex::new(tx))));
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0u8; 16];

        // Nothing came for HOT: the stream goes to tokio's reactor and says Pending.
        let first = Pin::new(&mut stream).poll_read(&mut cx, &mut buf);
        assert!(first.is_pending());
        assert!(
            stream.reactor.is_some(),
            "registered with the reactor once quiet"
        );

        peer.write_all(&frame(3)).unwrap();
        woken
            .recv_timeout(Duration::from_secs(30))
            .expect("the reactor wakes the reader when data arrives");
        match Pin::new(&mut stream).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(n)) => assert_eq!(&buf[..n], frame(3)),
            other => panic!("expected the data, got {other:?}"),
        }
    }

    #[test]
    fn reads_data_then_the_end_of_the_stream() {
        let rt = runtime();
        let (mut stream, mut peer, _wire) = pair(&rt);
        // A frame, then the start of one that never ends: lapin gets the whole frame only.
        peer.write_all(&frame(3)).unwrap();
        peer.write_all(&frame(3)[..5]).unwrap();
        drop(peer);
        let mut got = Vec::new();
        let mut buf = [0u8; 2];
        loop {
            let read = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_read(cx, &mut buf));
            match rt.block_on(read).unwrap() {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(got, frame(3));
    }

    #[test]
    fn a_wait_on_the_socket_ends_for_a_nudge_data_or_quiet() {
        let rt = runtime();
        let (stream, mut peer, wire) = pair(&rt);
        let long = Duration::from_secs(30);

        // A nudge from another thread while waiting, and one given before the wait.
        let nudger = wire.clone();
        let other = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            nudger.nudge();
        });
        assert_eq!(stream.wait_here(long).unwrap(), Woke::Nudged);
        other.join().unwrap();
        wire.nudge();
        assert_eq!(stream.wait_here(long).unwrap(), Woke::Nudged);

        // Both nudges were taken (and their eventfd edges seen): nothing left but the timeout.
        assert_eq!(
            stream.wait_here(Duration::from_millis(5)).unwrap(),
            Woke::Quiet
        );

        peer.write_all(b"x").unwrap();
        assert_eq!(stream.wait_here(long).unwrap(), Woke::Socket);
    }
}
