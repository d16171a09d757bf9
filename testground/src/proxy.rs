//! A TCP proxy on loopback that a test owns, to make partitions without mocks: it
//! forwards bytes to a target until it is cut, then holds every connection open and
//! silent (a black hole, as a broken network is, not a refused connection) until
//! it is restored.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(watch::Sender::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, target, flag.subscribe()));
            }
        });
        Ok(Self { addr, cut, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on nothing passes, in either direction, on old or new connections.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// New connections pass again (those open while cut stay dead, as after a real
    /// partition the peers must reconnect).
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    if *cut.borrow() {
        // Accepted and never answered.
        let _ = cut.wait_for(|cut| !cut).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    let cut_off = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = cut.wait_for(|cut| *cut) => true,
    };
    if cut_off {
        // Silent from here on: hold both sockets open without a byte until restored.
        let _ = cut.wait_for(|cut| !cut).await;
        let _ = client.shutdown().await;
    }
}
