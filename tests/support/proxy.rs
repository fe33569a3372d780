//! A TCP proxy between an agent and its broker that can cut the network: while cut, it accepts
//! connections and reads from them but forwards nothing, like a link whose packets are dropped, so
//! the agent notices only through its keep-alive. Restoring closes the stalled connections.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    /// Bumped on every restore; connections of an older generation close themselves.
    generation: Arc<AtomicU64>,
    streams: Arc<Mutex<Vec<(u64, TcpStream)>>>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let streams: Arc<Mutex<Vec<(u64, TcpStream)>>> = Arc::default();
        {
            let (cut, generation, streams) = (cut.clone(), generation.clone(), streams.clone());
            thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let born = generation.load(Ordering::SeqCst);
                    let upstream = if cut.load(Ordering::SeqCst) {
                        None
                    } else {
                        TcpStream::connect(("127.0.0.1", target_port)).ok()
                    };
                    if let Ok(copy) = client.try_clone() {
                        streams.lock().unwrap().push((born, copy));
                    }
                    match upstream {
                        Some(upstream) => {
                            if let Ok(copy) = upstream.try_clone() {
                                streams.lock().unwrap().push((born, copy));
                            }
                            pump(
                                client.try_clone().unwrap(),
                                upstream.try_clone().unwrap(),
                                cut.clone(),
                            );
                            pump(upstream, client, cut.clone());
                        }
                        // Cut: read and discard what the client sends, and never reply.
                        None => pump_to_nowhere(client),
                    }
                }
            });
        }
        Self {
            port,
            cut,
            generation,
            streams,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops forwarding in both directions; connections stay open but silent.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Forwards again. Connections stalled during the cut are closed, as their peers have long
    /// given up on them.
    pub fn restore(&self) {
        let old = self.generation.fetch_add(1, Ordering::SeqCst);
        let mut streams = self.streams.lock().unwrap();
        for (born, stream) in streams.iter() {
            if *born <= old {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        streams.retain(|(born, _)| *born > old);
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: Arc<AtomicBool>) {
    thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if cut.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

fn pump_to_nowhere(mut from: TcpStream) {
    thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_secs(120)));
        let mut buffer = [0u8; 4096];
        while matches!(from.read(&mut buffer), Ok(n) if n > 0) {}
    });
}
