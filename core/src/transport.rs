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
//! While the I/O thread waits there, it does not see the frames other threads queue. The
//! settler, which queues the acks, nudges it; any other frame (a heartbeat, Maxretry's republish,
//! a declaration made while messages flow) waits for the next read or for [`HOT`] at the longest.
//!
//! With `amqps://`, lapin's TLS stream wraps the `DirectStream` (tests/tls.rs runs a consumer
//! through a TLS proxy, including a reconnection).

use async_rs::traits::{Executor, Reactor, RuntimeKit};
use async_rs::util::Task;
use async_rs::Tokio;
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::Stream;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
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
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        // SAFETY: plain syscall; the descriptor is owned by the OwnedFd below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Nudge {
            // SAFETY: `fd` is a new descriptor nothing else owns.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
            parked: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
        }))
    }

    /// Called after queueing frames. A syscall only when the I/O thread waits on the socket: the
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

/// lapin's tokio runtime, whose TCP connections are [`DirectStream`]s sharing one [`Nudge`]
/// (one kit per connection).
#[derive(Clone, Debug)]
pub(crate) struct DirectKit {
    tokio: Tokio,
    handle: Handle,
    nudge: Arc<Nudge>,
}

impl DirectKit {
    /// Binds to the current tokio runtime: call from inside it.
    pub(crate) fn current(nudge: Arc<Nudge>) -> Self {
        DirectKit {
            tokio: Tokio::current(),
            handle: Handle::current(),
            nudge,
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
        let nudge = self.nudge.clone();
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
            let poller = poller(&socket, &nudge)?;
            Ok(DirectStream {
                reactor: None,
                poller,
                socket,
                handle,
                nudge,
                fresh: false,
                drained: false,
                last_read: Instant::now(),
                write_blocked: false,
            })
        }
    }
}

/// An epoll set for waiting on the I/O thread: the socket level-triggered (readable data is
/// reported until read), the nudge's eventfd edge-triggered (see [`Nudge`]).
fn poller(socket: &TcpStream, nudge: &Nudge) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned by the OwnedFd below.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let poller = unsafe { OwnedFd::from_raw_fd(fd) };
    // Which descriptor woke the wait does not matter (the read and the nudge flag tell).
    let watch = |fd: RawFd, events: i32| {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are live; the event is read during the call only.
        match unsafe { libc::epoll_ctl(poller.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    };
    watch(socket.as_raw_fd(), libc::EPOLLIN)?;
    watch(nudge.event.as_raw_fd(), libc::EPOLLIN | libc::EPOLLET)?;
    Ok(poller)
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
    /// The I/O thread's own epoll set: the socket and the nudge (see [`poller`]).
    poller: OwnedFd,
    socket: TcpStream,
    handle: Handle,
    nudge: Arc<Nudge>,
    /// Bytes were read since lapin last saw `Pending`.
    fresh: bool,
    /// The last read found the socket empty (or did not fill the buffer), and nothing said it
    /// has data since.
    drained: bool,
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
        room: usize,
        mut read: impl FnMut(&mut TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            if !self.drained {
                match read(&mut self.socket) {
                    Ok(n) => {
                        self.fresh = true;
                        // A read that did not fill the buffer took all there was (as tokio
                        // assumes too): the next call waits rather than read in vain.
                        self.drained = n < room;
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if self.fresh {
                // lapin reads until it is told to wait and only then parses: let it parse what
                // it has and come back, to the wait below.
                self.fresh = false;
                self.last_read = Instant::now();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let quiet_for = self.last_read.elapsed();
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

    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&mut TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match write(&mut self.socket) {
                Ok(n) => {
                    self.write_blocked = false;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            self.write_blocked = true;
            match self.reactor()?.poll_write_ready(cx) {
                Poll::Ready(Ok(mut ready)) => ready.clear_ready(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Waits up to `timeout` for the socket or a nudge, on the calling (I/O) thread.
    fn wait_here(&self, timeout: Duration) -> io::Result<Woke> {
        let nudge = &self.nudge;
        nudge.parked.store(true, SeqCst);
        if nudge.take() {
            nudge.parked.store(false, SeqCst);
            return Ok(Woke::Nudged);
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // epoll counts in milliseconds: round up, so a short rest of the window still waits.
        let limit = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: a live buffer of two events, and our own epoll descriptor.
        let ready =
            unsafe { libc::epoll_wait(self.poller.as_raw_fd(), events.as_mut_ptr(), 2, limit) };
        nudge.parked.store(false, SeqCst);
        if ready < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(Woke::Socket),
                _ => Err(e),
            };
        }
        if nudge.take() {
            Ok(Woke::Nudged)
        } else if ready > 0 {
            // The socket, or an eventfd edge whose nudge an earlier look took: read again.
            Ok(Woke::Socket)
        } else {
            Ok(Woke::Quiet)
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
            .poll_read_with(cx, buf.len(), |s| s.read(buf))
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let room = bufs.iter().map(|b| b.len()).sum();
        self.get_mut()
            .poll_read_with(cx, room, |s| s.read_vectored(bufs))
    }
}

impl AsyncWrite for DirectStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |s| s.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |s| s.write_vectored(bufs))
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
    fn pair(rt: &tokio::runtime::Runtime) -> (DirectStream, TcpStream, Arc<Nudge>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let nudge = Nudge::new().unwrap();
        let kit = rt.block_on(async { DirectKit::current(nudge.clone()) });
        let stream = rt.block_on(kit.tcp_connect_addr(addr)).unwrap();
        let (peer, _) = listener.accept().unwrap();
        (stream, peer, nudge)
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
        let (mut stream, mut peer, _nudge) = pair(&rt);
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

        peer.write_all(b"two").unwrap();
        woken
            .recv_timeout(Duration::from_secs(30))
            .expect("the reactor wakes the reader when data arrives");
        match Pin::new(&mut stream).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(n)) => assert_eq!(&buf[..n], b"two"),
            other => panic!("expected the data, got {other:?}"),
        }
    }

    #[test]
    fn reads_data_then_the_end_of_the_stream() {
        let rt = runtime();
        let (mut stream, mut peer, _nudge) = pair(&rt);
        peer.write_all(b"abc").unwrap();
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
        assert_eq!(got, b"abc");
    }

    #[test]
    fn a_wait_on_the_socket_ends_for_a_nudge_data_or_quiet() {
        let rt = runtime();
        let (stream, mut peer, nudge) = pair(&rt);
        let long = Duration::from_secs(30);

        // A nudge from another thread while waiting, and one given before the wait.
        let nudger = nudge.clone();
        let other = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            nudger.wake();
        });
        assert_eq!(stream.wait_here(long).unwrap(), Woke::Nudged);
        other.join().unwrap();
        nudge.wake();
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
