//! Deliveries read off the consumer connection's socket by cleats, not by lapin.
//!
//! lapin parses every frame on its I/O thread (nom over its ring buffer), clones the channel's
//! handle for each, and hands a delivery to its consumer behind a lock: 5-6 us of CPU per message,
//! in series ahead of the work threads, the largest cost left in the engine (docs/performance.md).
//! On plain TCP a [`Demux`] sits in the stream lapin reads from (transport.rs). It cuts the bytes
//! into frames, takes each `basic.deliver` of a consuming channel and its content frames into
//! that channel's [`Inbox`], and passes every other frame to lapin, in order. The thread that
//! reads (lapin's I/O thread, or a host thread waiting on the socket: reader.rs) only copies
//! bytes; host threads decode the rest ([`Received::decode`]) when they take a delivery
//! (source.rs).
//!
//! lapin never sees these deliveries: on plain TCP the settlers write acks themselves, and
//! lapin's consumer only reports its end (a cancel from the broker, a failed channel). lapin
//! takes the server for dead when it reads nothing for two heartbeat intervals; while only
//! deliveries arrive, the demux passes it a heartbeat frame every [`KEEPALIVE`].

use crate::delivery::Properties;
use crate::lock;
use std::io::{self, IoSliceMut, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_END: u8 = 0xCE;
/// A heartbeat frame, as the broker sends it.
const HEARTBEAT: [u8; 8] = [8, 0, 0, 0, 0, 0, 0, FRAME_END];
/// `basic.deliver`: class 60, method 60.
const BASIC_DELIVER: [u8; 4] = [0, 60, 0, 60];
/// How often lapin is shown a heartbeat while it is passed nothing else.
const KEEPALIVE: Duration = Duration::from_millis(500);
/// How much one read asks of the socket.
const CHUNK: usize = 64 * 1024;
/// A frame larger than this is taken for garbage: the demux steps aside and lets lapin fail the
/// connection. (RabbitMQ's largest frame_max is 128 KiB by default, 1 MiB at most.)
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// A delivery as it came off the wire: `basic.deliver`'s arguments, the content header's
/// property list and the body, not decoded yet.
#[derive(Debug)]
pub(crate) struct Received {
    /// The method's arguments, then the property list from `props_at` on.
    head: Vec<u8>,
    props_at: usize,
    body: Vec<u8>,
}

/// A delivery's fields, decoded (from a [`Received`], or from lapin's delivery with TLS).
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) delivery_tag: u64,
    pub(crate) redelivered: bool,
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) properties: Properties,
    pub(crate) body: Vec<u8>,
}

/// Reads `basic.deliver`'s arguments: consumer-tag, delivery-tag, redelivered, exchange,
/// routing-key.
fn deliver_arguments(b: &[u8]) -> Option<(u64, bool, String, String)> {
    fn short(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let (&n, rest) = b.split_first()?;
        let n = usize::from(n);
        (rest.len() >= n).then(|| rest.split_at(n))
    }
    let (_, b) = short(b)?;
    let (tag, b) = b.split_first_chunk::<8>()?;
    let (&bits, b) = b.split_first()?;
    let (exchange, b) = short(b)?;
    let (routing_key, _) = short(b)?;
    let text = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
    Some((
        u64::from_be_bytes(*tag),
        bits & 1 != 0,
        text(exchange),
        text(routing_key),
    ))
}

impl Received {
    /// Decodes the method's arguments and the properties. An error means the broker sent a
    /// `basic.deliver` that cannot be read (nothing can be settled for it).
    pub(crate) fn decode(self) -> Result<Decoded, String> {
        let (delivery_tag, redelivered, exchange, routing_key) =
            deliver_arguments(&self.head[..self.props_at])
                .ok_or("a basic.deliver frame whose arguments cannot be read")?;
        let properties = match lapin::protocol::basic::parse_properties(&self.head[self.props_at..])
        {
            Ok((_, p)) => Properties::from_lapin(&p),
            // The body still reaches `work`: losing the message over its metadata would be worse.
            Err(e) => {
                log::warn!(
                    "delivery {delivery_tag} from '{exchange}': properties cannot be decoded ({e}); handed over without them"
                );
                Properties::default()
            }
        };
        Ok(Decoded {
            delivery_tag,
            redelivered,
            exchange,
            routing_key,
            properties,
            body: self.body,
        })
    }
}

/// The deliveries of one consuming channel, in the order they arrived, for its host threads.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
}

#[derive(Debug, Default)]
struct InboxState {
    queue: std::collections::VecDeque<Received>,
    /// Woken (once) when a delivery arrives.
    waker: Option<Waker>,
}

impl Inbox {
    /// Moves up to `limit` deliveries into `out`. Returns true when it stopped at the limit;
    /// false when the inbox is empty, after registering `cx`'s waker for the next delivery.
    pub(crate) fn take(&self, cx: &Context<'_>, limit: usize, out: &mut Vec<Received>) -> bool {
        let mut s = lock(&self.state);
        let n = limit.min(s.queue.len());
        out.extend(s.queue.drain(..n));
        if n == limit {
            return true;
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        false
    }

    fn push(&self, received: Received) -> Option<Waker> {
        let mut s = lock(&self.state);
        s.queue.push_back(received);
        s.waker.take()
    }
}

/// The channels whose deliveries the demux takes, shared by a connection's [`Demux`] and
/// whoever opens its consumers.
#[derive(Debug, Default)]
pub(crate) struct Inboxes {
    channels: Mutex<Vec<(u16, Arc<Inbox>)>>,
    /// Bumped on every change, so the demux rereads the list only then.
    version: AtomicU64,
}

impl Inboxes {
    /// Takes `channel`'s deliveries from now on. Call before its `basic.consume` goes out.
    pub(crate) fn open(&self, channel: u16) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox::default());
        let mut channels = lock(&self.channels);
        channels.retain(|(c, _)| *c != channel);
        channels.push((channel, inbox.clone()));
        self.version.fetch_add(1, Ordering::AcqRel);
        inbox
    }

    /// A new connection: no channel consumes yet.
    pub(crate) fn clear(&self) {
        lock(&self.channels).clear();
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// A delivery whose frames are still coming.
#[derive(Debug)]
struct Partial {
    channel: u16,
    inbox: Arc<Inbox>,
    received: Received,
    /// Body bytes still to come; `None` until the content header has come.
    body_left: Option<u64>,
}

/// Splits what the socket reads into the deliveries of consuming channels and the frames for
/// lapin (module docs).
#[derive(Debug)]
pub(crate) struct Demux {
    inboxes: Arc<Inboxes>,
    /// A copy of `inboxes` as of `version`.
    channels: Vec<(u16, Arc<Inbox>)>,
    version: u64,
    /// Bytes read, `start..end` not split yet (part of a frame).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Whole frames for lapin, `pass_at..` not given yet.
    pass: Vec<u8>,
    pass_at: usize,
    partial: Vec<Partial>,
    /// Inboxes to wake once the current read is split.
    wake: Vec<Waker>,
    /// When lapin was last given bytes.
    fed: Instant,
    /// When the socket last had something to read.
    read_at: Instant,
    /// The stream is not AMQP frames as expected (a protocol header, a frame too large):
    /// everything goes to lapin as it is read, and lapin reports the error.
    raw: bool,
}

impl Demux {
    pub(crate) fn new(inboxes: Arc<Inboxes>) -> Self {
        Demux {
            inboxes,
            channels: Vec::new(),
            version: u64::MAX,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            pass: Vec::new(),
            pass_at: 0,
            partial: Vec::new(),
            wake: Vec::new(),
            fed: Instant::now(),
            read_at: Instant::now(),
            raw: false,
        }
    }

    /// Lapin has bytes waiting.
    pub(crate) fn has_pass(&self) -> bool {
        self.pass_at < self.pass.len()
    }

    /// Copies lapin's bytes into `bufs`; returns how many.
    pub(crate) fn give(&mut self, bufs: &mut [IoSliceMut<'_>]) -> usize {
        let mut n = 0;
        for buf in bufs.iter_mut() {
            let take = buf.len().min(self.pass.len() - self.pass_at);
            buf[..take].copy_from_slice(&self.pass[self.pass_at..self.pass_at + take]);
            self.pass_at += take;
            n += take;
        }
        if self.pass_at == self.pass.len() {
            self.pass.clear();
            self.pass_at = 0;
        }
        self.fed = Instant::now();
        n
    }

    /// Reads what the socket has and splits it. Returns the bytes read and the room the read
    /// had (a read that did not fill it took everything there was); 0 bytes is the end of the
    /// stream.
    pub(crate) fn read_from(&mut self, mut socket: &TcpStream) -> io::Result<(usize, usize)> {
        // What is left is part of a frame: move it to the front when room runs short, and
        // make room for all of that frame.
        if self.start > 0 && self.buf.len() - self.end < CHUNK / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let need = (self.start + self.frame_len().unwrap_or(0)).max(self.end + CHUNK / 4);
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let room = self.buf.len() - self.end;
        let n = socket.read(&mut self.buf[self.end..])?;
        if n > 0 {
            self.read_at = Instant::now();
        }
        self.end += n;
        self.split();
        Ok((n, room))
    }

    /// When a read last found data, whichever thread read it.
    pub(crate) fn read_at(&self) -> Instant {
        self.read_at
    }

    /// The size of the frame at `start`, header and end byte included, once its header is in.
    fn frame_len(&self) -> Option<usize> {
        let b = &self.buf[self.start..self.end];
        (b.len() >= 7).then(|| u32::from_be_bytes([b[3], b[4], b[5], b[6]]) as usize + 8)
    }

    /// Routes every whole frame read so far, then wakes the inboxes that received deliveries.
    fn split(&mut self) {
        let version = self.inboxes.version.load(Ordering::Acquire);
        if version != self.version {
            self.channels = lock(&self.inboxes.channels).clone();
            self.version = version;
        }
        let mut taken = false;
        while !self.raw {
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                break;
            }
            if self.buf[self.start] == b'A' {
                // "AMQP" and a version: the broker refuses ours. Not a frame.
                self.raw = true;
                break;
            }
            let Some(len) = self.frame_len() else { break };
            if len > MAX_FRAME {
                self.raw = true;
                break;
            }
            if self.end - self.start < len {
                break;
            }
            let (start, end) = (self.start, self.start + len);
            if self.buf[end - 1] != FRAME_END {
                // Not where a frame should end: lapin reports the broken stream.
                self.raw = true;
                break;
            }
            self.start = end;
            taken |= self.route(start, end);
        }
        if self.raw {
            self.pass.extend_from_slice(&self.buf[self.start..self.end]);
            self.start = 0;
            self.end = 0;
        } else if taken && !self.has_pass() && self.fed.elapsed() >= KEEPALIVE {
            self.pass.extend_from_slice(&HEARTBEAT);
        }
        for waker in self.wake.drain(..) {
            waker.wake();
        }
    }

    /// Takes the frame at `start..end` if it belongs to a delivery of a consuming channel
    /// (returns true), or queues it for lapin.
    fn route(&mut self, start: usize, end: usize) -> bool {
        let frame = &self.buf[start..end];
        let kind = frame[0];
        let channel = u16::from_be_bytes([frame[1], frame[2]]);
        let payload = &frame[7..frame.len() - 1];
        let at = self.partial.iter().position(|p| p.channel == channel);
        match (kind, at) {
            (FRAME_METHOD, _) if payload.starts_with(&BASIC_DELIVER) => {
                if let Some(inbox) = self.channels.iter().find(|(c, _)| *c == channel) {
                    if let Some(at) = at {
                        log::warn!("channel {channel}: a delivery's content was cut short");
                        self.partial.swap_remove(at);
                    }
                    let head = payload[4..].to_vec();
                    self.partial.push(Partial {
                        channel,
                        inbox: inbox.1.clone(),
                        received: Received {
                            props_at: head.len(),
                            head,
                            body: Vec::new(),
                        },
                        body_left: None,
                    });
                    return true;
                }
            }
            (FRAME_HEADER, Some(at))
                if self.partial[at].body_left.is_none() && payload.len() >= 12 =>
            {
                let size = u64::from_be_bytes(payload[4..12].try_into().expect("8 bytes"));
                let p = &mut self.partial[at];
                p.received.head.extend_from_slice(&payload[12..]);
                // What the broker says is coming, up to a bound: the size is not trusted.
                p.received.body.reserve(size.min(CHUNK as u64) as usize);
                p.body_left = Some(size);
                self.complete(at);
                return true;
            }
            (FRAME_BODY, Some(at)) if self.partial[at].body_left.is_some() => {
                let p = &mut self.partial[at];
                p.received.body.extend_from_slice(payload);
                let left = p.body_left.as_mut().expect("checked above");
                *left = left.saturating_sub(payload.len() as u64);
                self.complete(at);
                return true;
            }
            (_, Some(at)) => {
                // Anything else on the channel in the middle of a delivery breaks the protocol;
                // lapin gets the frame and decides.
                log::warn!("channel {channel}: a delivery's content was cut short");
                self.partial.swap_remove(at);
            }
            _ => {}
        }
        self.pass.extend_from_slice(&self.buf[start..end]);
        false
    }

    /// Hands the delivery at `at` to its inbox if its body is complete.
    fn complete(&mut self, at: usize) {
        if self.partial[at].body_left == Some(0) {
            let p = self.partial.swap_remove(at);
            if let Some(waker) = p.inbox.push(p.received) {
                self.wake.push(waker);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    pub(crate) fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f.push(FRAME_END);
        f
    }

    fn short(s: &str) -> Vec<u8> {
        let mut v = vec![s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    /// A delivery's frames: deliver, header (content-type and a header table), body in
    /// frames of `chunk` bytes.
    pub(crate) fn delivery(channel: u16, tag: u64, body: &[u8], chunk: usize) -> Vec<u8> {
        let mut m = BASIC_DELIVER.to_vec();
        m.extend(short("ctag"));
        m.extend_from_slice(&tag.to_be_bytes());
        m.push(1);
        m.extend(short("ex"));
        m.extend(short("rk"));
        let mut h = vec![0, 60, 0, 0];
        h.extend_from_slice(&(body.len() as u64).to_be_bytes());
        // content-type and headers {"n": long-string "v"}
        h.extend_from_slice(&[0b1010_0000, 0]);
        h.extend(short("application/json"));
        let table = [short("n"), vec![b'S', 0, 0, 0, 1, b'v']].concat();
        h.extend_from_slice(&(table.len() as u32).to_be_bytes());
        h.extend(table);
        let mut out = frame(FRAME_METHOD, channel, &m);
        out.extend(frame(FRAME_HEADER, channel, &h));
        for part in body.chunks(chunk.max(1)) {
            out.extend(frame(FRAME_BODY, channel, part));
        }
        out
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    pub(crate) struct Count(pub(crate) AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A demux reading from a local socket into which `feed` writes.
    struct Rig {
        demux: Demux,
        reader: TcpStream,
        writer: TcpStream,
        inboxes: Arc<Inboxes>,
    }

    impl Rig {
        fn new() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (reader, _) = listener.accept().unwrap();
            let inboxes = Arc::new(Inboxes::default());
            Rig {
                demux: Demux::new(inboxes.clone()),
                reader,
                writer,
                inboxes,
            }
        }

        /// Writes `bytes` in pieces of `step` and reads each piece.
        fn feed(&mut self, bytes: &[u8], step: usize) {
            for piece in bytes.chunks(step) {
                self.writer.write_all(piece).unwrap();
                let mut got = 0;
                while got < piece.len() {
                    got += self.demux.read_from(&self.reader).unwrap().0;
                }
            }
        }

        fn lapin_gets(&mut self) -> Vec<u8> {
            let mut out = vec![0; 1 << 20];
            let n = self.demux.give(&mut [IoSliceMut::new(&mut out)]);
            out.truncate(n);
            out
        }
    }

    fn take_all(inbox: &Inbox, waker: &Waker) -> Vec<Decoded> {
        let mut out = Vec::new();
        assert!(!inbox.take(&Context::from_waker(waker), 100, &mut out));
        out.into_iter().map(|r| r.decode().unwrap()).collect()
    }

    #[test]
    fn deliveries_of_consuming_channels_go_to_their_inbox_and_the_rest_to_lapin_in_order() {
        for step in [1, 3, 7, 64, 100_000] {
            let mut rig = Rig::new();
            let inbox = rig.inboxes.open(1);
            let count = Arc::new(Count::default());
            let waker = Waker::from(count.clone());
            assert!(take_all(&inbox, &waker).is_empty());
            let qos_ok = frame(FRAME_METHOD, 1, &[0, 60, 0, 11]);
            let other = delivery(2, 5, b"for lapin", 4);
            let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
            let mut stream = qos_ok.clone();
            stream.extend(delivery(1, 1, b"{\"a\":1}", 3));
            stream.extend(other.clone());
            stream.extend(delivery(1, 2, b"", 10));
            stream.extend(HEARTBEAT);
            stream.extend(delivery(1, 3, &big, 32_768));
            rig.feed(&stream, step);

            assert_eq!(
                rig.lapin_gets(),
                [qos_ok, other, HEARTBEAT.to_vec()].concat(),
                "step {step}"
            );
            assert!(
                count.0.load(Ordering::SeqCst) >= 1,
                "the inbox's waker was woken"
            );
            let got = take_all(&inbox, &waker);
            let tags: Vec<u64> = got.iter().map(|d| d.delivery_tag).collect();
            assert_eq!(tags, [1, 2, 3]);
            assert_eq!(got[0].body, b"{\"a\":1}");
            assert!(got[1].body.is_empty());
            assert_eq!(got[2].body, big);
            assert!(got[0].redelivered);
            assert_eq!((&*got[0].exchange, &*got[0].routing_key), ("ex", "rk"));
            let p = &got[0].properties;
            assert_eq!(p.content_type.as_deref(), Some("application/json"));
            assert_eq!(p.headers.as_ref().map(|h| h.len()), Some(1));
        }
    }

    #[test]
    fn content_after_a_method_for_lapin_stays_with_lapin() {
        // basic.return (60/50) on a consuming channel, with its content: lapin's.
        let mut rig = Rig::new();
        let inbox = rig.inboxes.open(1);
        let mut ret = frame(FRAME_METHOD, 1, &[0, 60, 0, 50, 0, 0]);
        ret.extend(frame(
            FRAME_HEADER,
            1,
            &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        ));
        ret.extend(frame(FRAME_BODY, 1, b"x"));
        rig.feed(&ret, 1000);
        assert_eq!(rig.lapin_gets(), ret);
        let waker = Waker::from(Arc::new(Count::default()));
        assert!(take_all(&inbox, &waker).is_empty());
    }

    #[test]
    fn lapin_is_shown_a_heartbeat_while_it_gets_nothing_else() {
        let mut rig = Rig::new();
        let _inbox = rig.inboxes.open(1);
        rig.feed(&delivery(1, 1, b"x", 10), 1000);
        assert!(!rig.demux.has_pass(), "lapin was fed just now");
        rig.demux.fed = Instant::now() - KEEPALIVE;
        rig.feed(&delivery(1, 2, b"x", 10), 1000);
        assert_eq!(rig.lapin_gets(), HEARTBEAT);
    }

    #[test]
    fn a_stream_that_is_not_frames_goes_to_lapin_as_it_is() {
        let mut rig = Rig::new();
        let _inbox = rig.inboxes.open(1);
        rig.feed(b"AMQP\x00\x00\x09\x01", 3);
        assert_eq!(rig.lapin_gets(), b"AMQP\x00\x00\x09\x01");
        let mut rig = Rig::new();
        let mut bad = frame(FRAME_METHOD, 1, &[0, 10, 0, 10]);
        *bad.last_mut().unwrap() = 0;
        bad.extend_from_slice(b"junk");
        rig.feed(&bad, 5);
        assert_eq!(rig.lapin_gets(), bad);
    }

    #[test]
    fn a_delivery_whose_properties_cannot_be_decoded_keeps_its_body() {
        let mut head = short("ctag");
        head.extend_from_slice(&7u64.to_be_bytes());
        head.push(0);
        head.extend(short("ex"));
        head.extend(short("rk"));
        let props_at = head.len();
        // content-type flagged, then nothing: the property list ends short.
        head.extend_from_slice(&[0b1000_0000, 0]);
        let r = Received {
            head,
            props_at,
            body: b"{}".to_vec(),
        };
        let d = r.decode().expect("the delivery itself is readable");
        assert_eq!((d.delivery_tag, &*d.body), (7, &b"{}"[..]));
        assert_eq!(d.properties.content_type, None);
    }

    #[test]
    fn deliver_arguments_that_are_cut_short_are_an_error() {
        let r = Received {
            head: vec![4, b'c'],
            props_at: 2,
            body: Vec::new(),
        };
        assert!(r.decode().is_err());
    }
}
