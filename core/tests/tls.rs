//! `amqps://`: the consumer connection's socket (transport.rs, waited on by lapin's I/O thread
//! while data flows) carries TLS, and so does the publisher's. The test broker speaks plain AMQP,
//! so a TLS-terminating proxy in this process stands in front of it, with a certificate from a
//! CA of the test's own that `SSL_CERT_FILE` makes trusted (rustls-native-certs reads it).
//! Cutting the proxied connections is the fault: the engine must recover through TLS again.

mod common;
use cleats_core::{Engine, Message, Outcome, Publisher, Status};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Accepts TLS on 127.0.0.1 and forwards the plaintext to the test broker, one thread per
/// connection.
struct TlsProxy {
    port: u16,
    /// Both sockets of every connection still open: `cut` shuts them down.
    open: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
    /// TLS handshakes completed (each one a connection the engine made through the proxy).
    handshakes: Arc<AtomicUsize>,
}

impl TlsProxy {
    /// Writes the CA to a file that `SSL_CERT_FILE` names, then listens.
    fn start() -> TlsProxy {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();

        let ca_file = std::env::temp_dir().join(format!("{}-ca.pem", unique("tls")));
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        // Read by rustls-native-certs when lapin builds its TLS connector, at each connect.
        std::env::set_var("SSL_CERT_FILE", &ca_file);

        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let broker = broker_address();
        let open = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (open2, handshakes2) = (open.clone(), handshakes.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(&broker) else {
                    continue;
                };
                let tls = rustls::ServerConnection::new(config.clone()).unwrap();
                open2
                    .lock()
                    .unwrap()
                    .push((client.try_clone().unwrap(), upstream.try_clone().unwrap()));
                let handshakes = handshakes2.clone();
                std::thread::spawn(move || {
                    let _ = forward(tls, client, upstream, &handshakes);
                });
            }
        });
        TlsProxy {
            port,
            open,
            handshakes,
        }
    }

    fn url(&self) -> String {
        format!("amqps://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Drops every proxied connection, as a network failure would.
    fn cut(&self) {
        for (client, upstream) in self.open.lock().unwrap().drain(..) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

/// host:port of the test broker (`AMQP_URL`).
fn broker_address() -> String {
    let url = url::Url::parse(&amqp_url()).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5672))
}

/// Moves bytes both ways until either side closes: TLS records from the client are decrypted
/// and written to the broker, the broker's bytes are encrypted and written to the client.
fn forward(
    mut tls: rustls::ServerConnection,
    mut client: TcpStream,
    mut upstream: TcpStream,
    handshakes: &AtomicUsize,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut handshaking = true;
    loop {
        while tls.wants_write() {
            tls.write_tls(&mut client)?;
        }
        if handshaking && !tls.is_handshaking() {
            handshaking = false;
            handshakes.fetch_add(1, Ordering::SeqCst);
        }
        let mut fds = [
            libc::pollfd {
                fd: client.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: upstream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds for sockets owned by this frame.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // A readable socket has data or is closed, so one read does not block.
        if fds[0].revents != 0 {
            if tls.read_tls(&mut client)? == 0 {
                return Ok(());
            }
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => upstream.write_all(&buf[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        if fds[1].revents != 0 {
            let n = upstream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            tls.writer().write_all(&buf[..n])?;
        }
    }
}

/// An engine consuming through the proxy, and every body its threads received.
struct Consuming {
    engine: Engine,
    seen: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Starts an engine whose consumer connects through the proxy, consuming `queue` with
/// `prefetch` and acking everything.
fn consume(proxy: &TlsProxy, queue: &str, prefetch: u16) -> Consuming {
    let global = options(json!({"amqp": proxy.url(), "exchange": "", "prefetch": prefetch}));
    let engine = Engine::new(&global).unwrap();
    let worker = engine.add_worker("Tls", queue, &global).unwrap();
    engine.start().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let threads = run_pool(worker.pool(), move |d| {
        seen2
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&d.body).into_owned());
        Outcome::Ack
    });
    Consuming {
        engine,
        seen,
        threads,
    }
}

fn publish(proxy: &TlsProxy, queue: &str, bodies: impl Iterator<Item = String>) {
    let publisher = Publisher::new(&options(json!({"amqp": proxy.url(), "exchange": ""}))).unwrap();
    let messages: Vec<Message> = bodies.map(|b| Message::new(queue, b)).collect();
    publisher.publish_all(&messages).unwrap();
    publisher.close().unwrap();
}

#[test]
fn consumes_publishes_and_recovers_over_tls() {
    init_logging();
    let proxy = TlsProxy::start();
    let q = unique("tls");
    Broker::connect().declare_queue(&q, Default::default());
    let Consuming {
        engine,
        seen,
        threads,
    } = consume(&proxy, &q, 10);
    assert!(proxy.handshakes.load(Ordering::SeqCst) >= 1);

    // A steady flow (the I/O thread waits on the TLS socket itself, nudged for the acks)...
    publish(&proxy, &q, (0..3000).map(|i| format!("a{i}")));
    assert!(
        wait_until(Duration::from_secs(30), || seen.lock().unwrap().len()
            >= 3000),
        "received {} of 3000 over TLS",
        seen.lock().unwrap().len()
    );
    // ...then quiet long enough for the socket to go back on the reactor, which must still
    // wake the reader for a single message.
    std::thread::sleep(Duration::from_millis(50));
    publish(&proxy, &q, std::iter::once("quiet".to_string()));
    assert!(wait_until(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .contains(&"quiet".to_string())));

    // The connection drops; the engine reconnects through TLS and goes on consuming.
    let before = proxy.handshakes.load(Ordering::SeqCst);
    proxy.cut();
    assert!(
        wait_until(Duration::from_secs(20), || {
            proxy.handshakes.load(Ordering::SeqCst) > before
                && matches!(engine.status(), Status::Connected { .. })
        }),
        "no recovery through TLS: {:?}",
        engine.status()
    );
    publish(&proxy, &q, (0..1000).map(|i| format!("b{i}")));
    assert!(
        wait_until(Duration::from_secs(30), || {
            let seen = seen.lock().unwrap();
            (0..1000).all(|i| seen.contains(&format!("b{i}")))
        }),
        "after recovery, not every message arrived over TLS"
    );

    let report = stop(&engine, Duration::from_secs(10));
    assert!(report.drained);
    for t in threads {
        t.join().unwrap();
    }
    // Every message was received and acked: nothing is left on the queue (unacked messages
    // would have been requeued when the connection was cut or closed).
    let seen: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
    assert_eq!(seen.len(), 3000 + 1 + 1000);
    let b = Broker::connect();
    assert_eq!(b.ready(&q), 0, "messages left unacked on the queue");
    b.delete_queue(&q);
}
