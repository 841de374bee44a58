//! The broker's own ceiling for an acknowledging consumer: a minimal AMQP 0-9-1 client on one
//! blocking socket and one thread, with no client library, no hand-off and no allocation per
//! message. It reads whatever the socket holds, and after each read acknowledges everything
//! received so far with one `multiple` ack (or one ack per message), in one write. No real
//! client can ask less of the broker or answer it sooner, so what this drains at a prefetch is
//! the most any consumer can drain from one queue at that prefetch on this machine.
//!
//! It speaks only what a consumer of a local broker needs (PLAIN auth, one channel, no
//! heartbeats) and treats anything unexpected as an error: a benchmark reference, not a client.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// How the reference acknowledges what one read brought.
#[derive(Clone, Copy, PartialEq)]
pub enum WireAcks {
    /// One `multiple` ack for the last delivery: the least ack work the broker can get.
    Multiple,
    /// One ack per delivery (still one write per read).
    Each,
}

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
const FRAME_MAX: u32 = 131_072;

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn short_str(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Appends one method frame: `args` follow the class and method ids.
fn method(out: &mut Vec<u8>, channel: u16, class: u16, id: u16, args: &[u8]) {
    out.push(FRAME_METHOD);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(4 + args.len() as u32).to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(args);
    out.push(FRAME_END);
}

fn basic_ack(out: &mut Vec<u8>, tag: u64, multiple: bool) {
    let mut args = [0u8; 9];
    args[..8].copy_from_slice(&tag.to_be_bytes());
    args[8] = u8::from(multiple);
    method(out, 1, 60, 80, &args);
}

/// Frames read from the socket, parsed in place.
struct Frames {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Frames {
    /// Reads more bytes (blocking); false at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n > 0)
    }

    /// The next complete frame already read, as (type, channel, payload).
    fn next_buffered(&mut self) -> io::Result<Option<(u8, u16, &[u8])>> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 7 {
            return Ok(None);
        }
        let size = u32::from_be_bytes([avail[3], avail[4], avail[5], avail[6]]) as usize;
        if avail.len() < 8 + size {
            return Ok(None);
        }
        if avail[7 + size] != FRAME_END {
            return Err(bad("frame without its end marker"));
        }
        let (kind, channel) = (avail[0], u16::from_be_bytes([avail[1], avail[2]]));
        let payload = self.start + 7..self.start + 7 + size;
        self.start += 8 + size;
        Ok(Some((kind, channel, &self.buf[payload])))
    }

    /// Waits for the next method frame, which must be `class.id` (a close from the broker, or
    /// anything else, is an error naming what came).
    fn expect_method(&mut self, class: u16, id: u16) -> io::Result<()> {
        loop {
            if let Some((kind, _, payload)) = self.next_buffered()? {
                if kind != FRAME_METHOD || payload.len() < 4 {
                    continue;
                }
                let got = (
                    u16::from_be_bytes([payload[0], payload[1]]),
                    u16::from_be_bytes([payload[2], payload[3]]),
                );
                if got == (class, id) {
                    return Ok(());
                }
                return Err(bad(format!(
                    "expected method {class}.{id}, the broker sent {}.{} ({})",
                    got.0,
                    got.1,
                    String::from_utf8_lossy(&payload[4..]).trim()
                )));
            }
            if !self.fill()? {
                return Err(bad("the broker closed the connection"));
            }
        }
    }
}

/// Where and as whom to connect.
pub struct Login<'a> {
    /// host:port
    pub addr: &'a str,
    pub user: &'a str,
    pub password: &'a str,
    pub vhost: &'a str,
}

/// Connects, logs in and opens channel 1.
fn open(login: &Login) -> io::Result<(Frames, Vec<u8>)> {
    let mut stream = TcpStream::connect(login.addr)?;
    stream.set_nodelay(true)?;
    stream.write_all(b"AMQP\x00\x00\x09\x01")?;
    let mut frames = Frames {
        stream: stream.try_clone()?,
        buf: vec![0; 4 * FRAME_MAX as usize],
        start: 0,
        end: 0,
    };
    frames.expect_method(10, 10)?; // connection.start
    let mut out = Vec::new();
    let mut args = vec![0, 0, 0, 0]; // client properties: an empty table
    short_str(&mut args, "PLAIN");
    let response = format!("\0{}\0{}", login.user, login.password);
    args.extend_from_slice(&(response.len() as u32).to_be_bytes());
    args.extend_from_slice(response.as_bytes());
    short_str(&mut args, "en_US");
    method(&mut out, 0, 10, 11, &args); // start-ok
    stream.write_all(&out)?;
    frames.expect_method(10, 30)?; // connection.tune
    out.clear();
    let mut args = 1u16.to_be_bytes().to_vec(); // channel-max
    args.extend_from_slice(&FRAME_MAX.to_be_bytes());
    args.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
    method(&mut out, 0, 10, 31, &args); // tune-ok
    let mut args = Vec::new();
    short_str(&mut args, login.vhost);
    args.extend_from_slice(&[0, 0]); // reserved shortstr, reserved bit
    method(&mut out, 0, 10, 40, &args); // connection.open
    method(&mut out, 1, 20, 10, &[0]); // channel.open
    stream.write_all(&out)?;
    frames.expect_method(10, 41)?; // open-ok
    frames.expect_method(20, 11)?; // channel.open-ok
    Ok((frames, out))
}

/// Consumes `messages` from `queue` at `prefetch`, acknowledging as `acks` says (`None`: a
/// no_ack consumer, which has no window, so `prefetch` is not sent), then closes the connection.
pub fn consume(
    login: &Login,
    queue: &str,
    messages: u64,
    prefetch: u16,
    acks: Option<WireAcks>,
) -> io::Result<()> {
    let (mut frames, mut out) = open(login)?;
    let mut stream = frames.stream.try_clone()?;
    out.clear();
    if acks.is_some() {
        let mut args = 0u32.to_be_bytes().to_vec(); // prefetch-size
        args.extend_from_slice(&prefetch.to_be_bytes());
        args.push(0); // global
        method(&mut out, 1, 60, 10, &args); // basic.qos
        stream.write_all(&out)?;
        frames.expect_method(60, 11)?;
        out.clear();
    }
    let mut args = vec![0, 0]; // reserved
    short_str(&mut args, queue);
    short_str(&mut args, "wire");
    args.push(if acks.is_none() { 0b10 } else { 0 }); // no-ack flag
    args.extend_from_slice(&[0, 0, 0, 0]); // arguments: an empty table
    method(&mut out, 1, 60, 20, &args); // basic.consume
    stream.write_all(&out)?;
    frames.expect_method(60, 21)?;

    let mut received = 0u64;
    // The last delivery's content is still to come (its header or some of its body).
    let mut incomplete = false;
    let mut body_left = 0u64;
    let mut last_tag = 0u64;
    let mut first_unacked = 0u64;
    // The read that brought consume-ok may have brought deliveries too.
    loop {
        while let Some((kind, _, payload)) = frames.next_buffered()? {
            match kind {
                FRAME_METHOD if payload.get(..4) == Some(&[0, 60, 0, 60]) => {
                    // basic.deliver: consumer-tag shortstr, then the delivery tag.
                    let at = 5 + payload[4] as usize;
                    let tag = payload
                        .get(at..at + 8)
                        .ok_or_else(|| bad("short basic.deliver"))?;
                    last_tag = u64::from_be_bytes(tag.try_into().unwrap_or_default());
                    incomplete = true;
                    if first_unacked == 0 {
                        first_unacked = last_tag;
                    }
                }
                FRAME_METHOD => {
                    return Err(bad(format!(
                        "unexpected method: {}",
                        String::from_utf8_lossy(payload)
                    )))
                }
                FRAME_HEADER => {
                    // class, weight, then the body size.
                    let size = payload.get(4..12).ok_or_else(|| bad("short header"))?;
                    body_left = u64::from_be_bytes(size.try_into().unwrap_or_default());
                    if body_left == 0 {
                        received += 1;
                        incomplete = false;
                    }
                }
                FRAME_BODY => {
                    body_left = body_left.saturating_sub(payload.len() as u64);
                    if body_left == 0 {
                        received += 1;
                        incomplete = false;
                    }
                }
                FRAME_HEARTBEAT => {}
                other => return Err(bad(format!("unexpected frame type {other}"))),
            }
        }
        // Acknowledge what arrived whole.
        let complete = last_tag - u64::from(incomplete);
        if let Some(how) = acks {
            if complete >= first_unacked && first_unacked != 0 {
                out.clear();
                match how {
                    WireAcks::Multiple => basic_ack(&mut out, complete, true),
                    WireAcks::Each => {
                        for tag in first_unacked..=complete {
                            basic_ack(&mut out, tag, false);
                        }
                    }
                }
                stream.write_all(&out)?;
                first_unacked = complete + 1;
            }
        }
        if received >= messages {
            break;
        }
        if !frames.fill()? {
            return Err(bad("the broker closed the connection"));
        }
    }
    out.clear();
    let mut args = 200u16.to_be_bytes().to_vec();
    short_str(&mut args, "done");
    args.extend_from_slice(&[0, 0, 0, 0]); // failing class and method
    method(&mut out, 0, 10, 50, &args); // connection.close
    stream.write_all(&out)?;
    // Deliveries may still arrive before close-ok; they are requeued with the connection.
    loop {
        while let Some((kind, _, payload)) = frames.next_buffered()? {
            if kind == FRAME_METHOD && payload.get(..4) == Some(&[0, 10, 0, 51]) {
                return Ok(());
            }
        }
        if !frames.fill()? {
            return Ok(());
        }
    }
}
