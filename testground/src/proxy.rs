//! A TCP proxy on loopback that a test owns, to make partitions without mocks: it
//! forwards bytes to a target until it is cut, then holds every connection open and
//! silent (a black hole, as a broken network is, not a refused connection) until
//! it is restored. What clients send is kept, with when, so that a test can say what
//! went out on the wire after a moment.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bytes clients sent, with when they passed.
type Sent = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// What passes: everything, nothing while connections hang, or nothing while
/// connections are reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Open,
    BlackHole,
    Refused,
}

pub struct Proxy {
    addr: SocketAddr,
    cut: Arc<watch::Sender<Flow>>,
    sent: Sent,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(watch::Sender::new(Flow::Open));
        let (flag, sent) = (cut.clone(), Sent::default());
        let record = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, target, flag.subscribe(), record.clone()));
            }
        });
        Ok(Self { addr, cut, sent, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything clients sent through the proxy since `since`, in order.
    pub fn sent_since(&self, since: Instant) -> Vec<u8> {
        let sent = self.sent.lock().expect("sent lock");
        sent.iter().filter(|(at, _)| *at >= since).flat_map(|(_, bytes)| bytes.iter().copied()).collect()
    }

    /// From now on nothing passes, in either direction, on old or new connections,
    /// which stay open and silent.
    pub fn cut(&self) {
        self.cut.send_replace(Flow::BlackHole);
    }

    /// From now on every connection, old or new, is closed at once: a partition that
    /// clients notice, so their requests fail fast instead of hanging.
    pub fn refuse(&self) {
        self.cut.send_replace(Flow::Refused);
    }

    /// New connections pass again (those open while cut stay dead, as after a real
    /// partition the peers must reconnect).
    pub fn restore(&self) {
        self.cut.send_replace(Flow::Open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut cut: watch::Receiver<Flow>, sent: Sent) {
    let flow = *cut.borrow();
    match flow {
        Flow::Open => {}
        Flow::Refused => return,
        Flow::BlackHole => {
            // Accepted and never answered.
            let _ = cut.wait_for(|flow| *flow == Flow::Open).await;
            return;
        }
    }
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    sent.lock().expect("sent lock").push((Instant::now(), buffer[..n].to_vec()));
                    if to_server.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let downstream = tokio::io::copy(&mut from_server, &mut to_client);
    let cut_off = tokio::select! {
        () = upstream => None,
        _ = downstream => None,
        flow = cut.wait_for(|flow| *flow != Flow::Open) => flow.ok().map(|flow| *flow),
    };
    if cut_off == Some(Flow::BlackHole) {
        // Silent from here on: hold both sockets open without a byte until restored.
        let _ = cut.wait_for(|flow| *flow != Flow::BlackHole).await;
    }
    let _ = client.shutdown().await;
}
