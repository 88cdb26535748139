//! A fault-injecting TCP proxy on 127.0.0.1 for the hung-store tests: forwards every connection to
//! a backend, and can be switched to black-hole — connections are still accepted and kept open,
//! but no byte moves in either direction (the proxy stops reading, so the kernel buffers fill and
//! nothing is ever closed or answered) — and back. Plain std threads, so it keeps working while a
//! test blocks on the binary. Stops forwarding and closes everything on drop.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a stalled or idle pump looks at the switches again.
const TICK: Duration = Duration::from_millis(20);

struct Switches {
    blackhole: AtomicBool,
    stop: AtomicBool,
    /// Connections accepted so far.
    accepted: AtomicUsize,
    /// Every socket opened, so that drop can close them all (unblocking their pumps).
    sockets: Mutex<Vec<TcpStream>>,
}

pub struct Proxy {
    pub port: u16,
    switches: Arc<Switches>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Forward 127.0.0.1:`port` (a fresh one) to `backend`.
    pub fn start(backend: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let switches = Arc::new(Switches {
            blackhole: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            sockets: Mutex::new(Vec::new()),
        });
        let sw = switches.clone();
        let accept = std::thread::spawn(move || {
            while !sw.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        sw.accepted.fetch_add(1, Ordering::SeqCst);
                        let _ = client.set_nonblocking(false);
                        // A black-holed backend: the connection is accepted and left hanging.
                        let Ok(server) = TcpStream::connect(backend) else {
                            continue;
                        };
                        for s in [&client, &server] {
                            if let Ok(c) = s.try_clone() {
                                sw.sockets.lock().unwrap_or_else(|p| p.into_inner()).push(c);
                            }
                        }
                        spawn_pump(&client, &server, sw.clone());
                        spawn_pump(&server, &client, sw.clone());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
                    Err(_) => std::thread::sleep(TICK),
                }
            }
        });
        Proxy {
            port,
            switches,
            accept: Some(accept),
        }
    }

    /// Stop (`true`) or resume (`false`) moving bytes on every connection, open or future.
    pub fn blackhole(&self, on: bool) {
        self.switches.blackhole.store(on, Ordering::SeqCst);
    }

    /// How many connections clients have opened through the proxy so far.
    pub fn connections(&self) -> usize {
        self.switches.accepted.load(Ordering::SeqCst)
    }

    /// Black-hole now; resume when the guard is dropped (even when the test panics).
    pub fn blackholed(&self) -> Blackholed<'_> {
        self.blackhole(true);
        Blackholed(self)
    }
}

pub struct Blackholed<'a>(&'a Proxy);

impl Drop for Blackholed<'_> {
    fn drop(&mut self) {
        self.0.blackhole(false);
    }
}

fn spawn_pump(from: &TcpStream, to: &TcpStream, sw: Arc<Switches>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        // Short reads so that the switches are seen promptly.
        let _ = from.set_read_timeout(Some(TICK));
        let mut buf = [0u8; 16 * 1024];
        loop {
            if sw.stop.load(Ordering::SeqCst) {
                break;
            }
            if sw.blackhole.load(Ordering::SeqCst) {
                std::thread::sleep(TICK);
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // Bytes read just as the switch flipped are held back until it flips again.
                    while sw.blackhole.load(Ordering::SeqCst) && !sw.stop.load(Ordering::SeqCst) {
                        std::thread::sleep(TICK);
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.switches.stop.store(true, Ordering::SeqCst);
        for s in self
            .switches
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
