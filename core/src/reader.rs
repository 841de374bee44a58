//! The consumer socket's read side on plain TCP, shared by lapin's I/O thread and host threads.
//!
//! Each burst of deliveries used to wake two threads: lapin's I/O thread, which read it off the
//! socket and split it ([`Demux`]), and then the host thread it woke to work on it. At prefetch
//! 10, where a burst is a few messages, those wake-ups were most of the engine's round trip and
//! of its CPU per message (docs/performance.md). Now a host thread that runs out of deliveries
//! waits on the socket itself ([`Wire::watch`], at most one thread at a time): the burst wakes
//! that thread alone; it reads and splits what came and takes its deliveries from its inbox
//! like any other thread would.
//!
//! The I/O thread keeps waiting on the socket too (transport.rs): it reads whenever no host
//! thread watches, because all are busy. While a host thread watches, the socket is taken out
//! of the I/O thread's epoll set ([`Reader::io_poller`]) and put back when the watch ends.
//! Both sets register it with `EPOLLEXCLUSIVE`, the host threads' first, which only decides
//! the moments in between. Leaving the socket in both sets was not enough: a burst that comes
//! in several TCP segments woke the watching thread with the first, and the I/O thread with the
//! next, because once woken the host thread's set has no thread waiting and an exclusive
//! wake-up passes on to the next set; at prefetch 10 that was one wake-up of the I/O thread per
//! window. Frames for lapin that a host thread reads wait in the demux, and the I/O thread is
//! nudged to hand them over.

use crate::inbound::{Demux, Inboxes};
use crate::transport::Wire;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A new nonblocking eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned by the OwnedFd below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An epoll set watching `socket` for input, exclusively (see the module docs), and `event`
/// for input, edge-triggered or not.
pub(crate) fn epoll_for(
    socket: &TcpStream,
    event: &OwnedFd,
    event_edge_triggered: bool,
) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned by the OwnedFd below.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let poller = unsafe { OwnedFd::from_raw_fd(fd) };
    // Which descriptor woke the wait does not matter to either waiter (what a read finds does).
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
    watch(socket.as_raw_fd(), libc::EPOLLIN | libc::EPOLLEXCLUSIVE)?;
    let edge = if event_edge_triggered {
        libc::EPOLLET
    } else {
        0
    };
    watch(event.as_raw_fd(), libc::EPOLLIN | edge)?;
    Ok(poller)
}

/// Adds `socket` to `poller`'s set (exclusively, for input, as [`epoll_for`] does) or takes it
/// out.
fn epoll_socket(poller: &OwnedFd, socket: &TcpStream, add: bool) -> io::Result<()> {
    let (op, events) = match add {
        true => (libc::EPOLL_CTL_ADD, libc::EPOLLIN | libc::EPOLLEXCLUSIVE),
        false => (libc::EPOLL_CTL_DEL, 0),
    };
    let mut event = libc::epoll_event {
        events: events as u32,
        u64: 0,
    };
    // SAFETY: both descriptors are live; the event is read during the call only.
    match unsafe { libc::epoll_ctl(poller.as_raw_fd(), op, socket.as_raw_fd(), &mut event) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Waits on `poller` for up to `timeout`; true when something in it is ready.
pub(crate) fn epoll_wait(poller: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
    // epoll counts in milliseconds: round up, so a short rest of a wait still waits.
    let limit = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: a live buffer of two events, and a live epoll descriptor.
    let ready = unsafe { libc::epoll_wait(poller.as_raw_fd(), events.as_mut_ptr(), 2, limit) };
    if ready < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            // A signal cut the wait short: the caller looks again.
            io::ErrorKind::Interrupted => Ok(true),
            _ => Err(e),
        };
    }
    Ok(ready > 0)
}

/// One TCP connection's socket and demux, as the I/O thread and host threads share them.
pub(crate) struct Reader {
    socket: Arc<TcpStream>,
    demux: Mutex<Demux>,
    /// The watching host thread's epoll set: the socket, and `alarm` (level-triggered).
    poller: OwnedFd,
    /// lapin's I/O thread's epoll set: the socket while no host thread watches it, and the
    /// wire's nudge (transport.rs).
    io_poller: Arc<OwnedFd>,
    /// Takes the watching host thread out of its wait (drained by that thread).
    alarm: OwnedFd,
    /// A host thread holds the [`Watch`].
    watched: AtomicBool,
    /// The stream ended, failed or was dropped: only lapin's I/O thread reads it from now on
    /// (and reports the end).
    closed: AtomicBool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

impl Reader {
    /// Registers the socket with the host threads' epoll set, then with the I/O thread's, which
    /// also waits on `nudge` (edge-triggered).
    pub(crate) fn new(
        socket: Arc<TcpStream>,
        inboxes: Arc<Inboxes>,
        nudge: &OwnedFd,
    ) -> io::Result<Self> {
        let alarm = eventfd()?;
        let poller = epoll_for(&socket, &alarm, false)?;
        let io_poller = Arc::new(epoll_for(&socket, nudge, true)?);
        Ok(Reader {
            socket,
            demux: Mutex::new(Demux::new(inboxes)),
            poller,
            io_poller,
            alarm,
            watched: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// The epoll set lapin's I/O thread waits on (see the module docs).
    pub(crate) fn io_poller(&self) -> Arc<OwnedFd> {
        self.io_poller.clone()
    }

    pub(crate) fn demux(&self) -> MutexGuard<'_, Demux> {
        // Every change leaves the demux consistent before anything can panic.
        self.demux.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream is over (read to its end, failed, or dropped by lapin): host threads leave
    /// it, and the one watching is woken.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        self.ring();
    }

    fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd.
        unsafe { libc::write(self.alarm.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    fn drain_alarm(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from our nonblocking eventfd.
        unsafe {
            libc::read(
                self.alarm.as_raw_fd(),
                count.as_mut_ptr().cast(),
                count.len(),
            )
        };
    }
}

impl Wire {
    /// For a host thread with nothing to do: the right to wait on the socket (module docs),
    /// unless another thread has it, or the connection has no plain socket.
    pub(crate) fn watch(self: &Arc<Self>) -> Option<Watch> {
        let reader = self.reader()?;
        if reader.closed.load(SeqCst) || reader.watched.swap(true, SeqCst) {
            return None;
        }
        // Only the watch's holder takes the socket out and puts it back, so the two alternate.
        // A failure leaves it in the I/O thread's set, as before the watch: a wake-up more.
        if let Err(e) = epoll_socket(&reader.io_poller, &reader.socket, false) {
            log::debug!("taking the socket from the I/O thread's wait: {e}");
        }
        Some(Watch {
            reader,
            wire: self.clone(),
        })
    }
}

/// The right of one host thread to wait on the socket; dropping it gives it up.
pub(crate) struct Watch {
    reader: Arc<Reader>,
    wire: Arc<Wire>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

/// Wakes the host thread waiting in [`Watch::wait`], as `Thread::unpark` wakes a parked one.
#[derive(Debug, Clone)]
pub(crate) struct Alarm(Arc<Reader>);

impl Alarm {
    pub(crate) fn ring(&self) {
        self.0.ring();
    }
}

impl Watch {
    pub(crate) fn alarm(&self) -> Alarm {
        Alarm(self.reader.clone())
    }

    /// Waits up to `timeout` for the socket to have something to read, or for the alarm;
    /// false when it timed out or the stream is over.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let reader = &self.reader;
        if reader.closed.load(SeqCst) {
            return false;
        }
        let ready = epoll_wait(&reader.poller, timeout).unwrap_or_else(|e| {
            log::debug!("waiting on the consumer socket: {e}");
            reader.close();
            false
        });
        // The alarm is level-triggered: reset it, or every later wait would end at once. An
        // alarm that came in between is not lost: whoever rang it also took this thread off the
        // pool's sleepers, which the thread checks next.
        reader.drain_alarm();
        ready && !reader.closed.load(SeqCst)
    }

    /// Reads what the socket has and hands it out: deliveries to their inboxes (whose wakers
    /// run), lapin's frames to the I/O thread, which is nudged for them and for the end of the
    /// stream.
    pub(crate) fn read(&self) {
        let reader = &self.reader;
        // The I/O thread is reading: it hands out what it reads itself.
        let Ok(mut demux) = reader.demux.try_lock() else {
            return;
        };
        let ended = loop {
            match demux.read_from(&reader.socket) {
                Ok((0, _)) => break true,
                // A read that did not fill the buffer took everything there was.
                Ok((n, room)) if n < room => break false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                // lapin's own read finds the failure (or the end of the stream after it).
                Err(e) => {
                    log::debug!("reading the consumer socket: {e}");
                    break true;
                }
            }
        };
        let for_lapin = demux.has_pass();
        drop(demux);
        if ended {
            reader.close();
        }
        if ended || for_lapin {
            self.wire.wake_io_thread();
        }
    }
}

impl Drop for Watch {
    /// Gives the socket back to the I/O thread's wait before another thread may watch: what
    /// is already there wakes it at once.
    fn drop(&mut self) {
        let reader = &self.reader;
        match epoll_socket(&reader.io_poller, &reader.socket, true) {
            // Still there: the watch could not take it out.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            // The I/O thread would only see the socket once it is quiet for `HOT` and waits on
            // tokio's reactor instead (transport.rs).
            Err(e) => log::warn!("giving the socket back to lapin's I/O thread: {e}"),
            Ok(()) => {}
        }
        reader.watched.store(false, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::tests::{delivery, frame, Count};
    use crate::transport::{DirectKit, DirectStream};
    use async_rs::traits::Reactor;
    use futures_io::AsyncRead;
    use std::io::Write;
    use std::net::TcpListener;
    use std::pin::Pin;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Waker};
    use std::time::Instant;

    /// A plain-TCP connection made through the engine's kit (its I/O thread never polled), and
    /// the peer's end of it. The runtime must outlive the stream.
    fn plain_connection() -> (tokio::runtime::Runtime, Arc<Wire>, DirectStream, TcpStream) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let wire = Wire::new().unwrap();
        let kit = rt.block_on(async { DirectKit::current(wire.clone(), true) });
        let stream = rt
            .block_on(kit.tcp_connect_addr(listener.local_addr().unwrap()))
            .unwrap();
        let (peer, _) = listener.accept().unwrap();
        (rt, wire, stream, peer)
    }

    #[test]
    fn a_watching_host_thread_reads_deliveries_for_their_inbox_and_passes_the_rest_to_lapin() {
        let (rt, wire, mut stream, mut peer) = plain_connection();
        let inbox = wire.consume(1).expect("plain TCP");
        let long = Duration::from_secs(30);

        let watch = wire.watch().expect("nobody watches yet");
        assert!(wire.watch().is_none(), "one host thread watches at a time");
        // A pool that found the inbox empty left its waker there.
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut taken = Vec::new();
        assert!(!inbox.take(&Context::from_waker(&waker), 10, &mut taken));
        assert!(!watch.wait(Duration::from_millis(20)), "nothing came");

        let for_lapin = frame(1, 0, &[0, 10, 0, 60]);
        peer.write_all(&[delivery(1, 7, b"{}", 100), for_lapin.clone()].concat())
            .unwrap();
        assert!(watch.wait(long), "the data wakes the watching thread");
        watch.read();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the inbox's waker ran");
        assert!(!inbox.take(&Context::from_waker(&waker), 10, &mut taken));
        let tags: Vec<u64> = taken
            .drain(..)
            .map(|r| r.decode().unwrap().delivery_tag)
            .collect();
        assert_eq!(tags, [7]);
        let mut buf = [0u8; 64];
        let n = rt
            .block_on(std::future::poll_fn(|cx| {
                Pin::new(&mut stream).poll_read(cx, &mut buf)
            }))
            .unwrap();
        assert_eq!(
            &buf[..n],
            for_lapin,
            "lapin reads the frame that is not a delivery"
        );

        // The alarm ends a wait, as unpark ends a park.
        let alarm = watch.alarm();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            alarm.ring();
        });
        let start = Instant::now();
        assert!(watch.wait(long));
        assert!(start.elapsed() < long);
        ringer.join().unwrap();
        drop(watch);

        // The end of the stream wakes the watcher, which leaves the socket to lapin.
        let watch = wire.watch().expect("given up by the last watcher");
        drop(peer);
        assert!(watch.wait(long));
        watch.read();
        let start = Instant::now();
        assert!(!watch.wait(long), "a stream that ended is not waited on");
        assert!(start.elapsed() < long);
        drop(watch);
        assert!(wire.watch().is_none(), "nobody watches a stream that ended");
    }

    /// While a host thread watches, data does not wake the I/O thread's wait at all; the end
    /// of the watch gives the socket back, and what came meanwhile wakes it at once.
    #[test]
    fn the_io_thread_waits_on_the_socket_only_while_no_host_thread_watches() {
        let (_rt, wire, _stream, mut peer) = plain_connection();
        let reader = wire.reader().expect("plain TCP");
        let io_wait = || epoll_wait(&reader.io_poller(), Duration::from_millis(200)).unwrap();

        let watch = wire.watch().expect("nobody watches yet");
        // Several writes: several segments, as a burst of deliveries often comes.
        for _ in 0..3 {
            peer.write_all(b"x").unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            watch.wait(Duration::from_secs(5)),
            "the watching thread is woken"
        );
        assert!(
            !io_wait(),
            "the I/O thread's set does not hold the socket during a watch"
        );
        drop(watch);
        assert!(
            io_wait(),
            "the unread data wakes the I/O thread once the watch ends"
        );

        // Taken out and given back at every watch, not only the first.
        let mut buf = [0u8; 8];
        while io::Read::read(&mut &*reader.socket, &mut buf).is_ok() {}
        let watch = wire.watch().expect("given up by the last watcher");
        peer.write_all(b"y").unwrap();
        assert!(!io_wait());
        drop(watch);
        assert!(io_wait());
    }

    /// The design rests on this kernel behaviour: of two epoll sets watching one socket with
    /// `EPOLLEXCLUSIVE`, data wakes only the one registered first when both wait, and the other
    /// when the first has nobody waiting.
    #[test]
    fn data_wakes_the_first_exclusive_waiter_only() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = listener.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        let (first_event, second_event) = (eventfd().unwrap(), eventfd().unwrap());
        let first = Arc::new(epoll_for(&socket, &first_event, false).unwrap());
        let second = Arc::new(epoll_for(&socket, &second_event, true).unwrap());
        let long = Duration::from_secs(5);

        // Both wait: only the first is woken (the second times out although data is there).
        let waiter = |poller: Arc<OwnedFd>, timeout| {
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                (epoll_wait(&poller, timeout).unwrap(), start.elapsed())
            })
        };
        let a = waiter(first.clone(), long);
        let b = waiter(second.clone(), Duration::from_millis(600));
        std::thread::sleep(Duration::from_millis(200));
        io::Write::write_all(&mut peer, b"x").unwrap();
        let (a_ready, a_took) = a.join().unwrap();
        let (_, b_took) = b.join().unwrap();
        assert!(a_ready && a_took < long, "the first waiter is woken");
        assert!(
            b_took >= Duration::from_millis(550),
            "the second waiter is not woken by the data: it waited {b_took:?}"
        );
        let mut byte = [0u8; 1];
        io::Read::read_exact(&mut &socket, &mut byte).unwrap();

        // Only the second waits: it is woken.
        let b = waiter(second.clone(), long);
        std::thread::sleep(Duration::from_millis(200));
        io::Write::write_all(&mut peer, b"y").unwrap();
        let (b_ready, b_took) = b.join().unwrap();
        assert!(
            b_ready && b_took < long,
            "the second waiter is woken when the first has nobody waiting"
        );
    }
}
