//! A network namespace of the test's own, joined to the host by a veth pair: an
//! address that is not loopback, for what refuses loopback (a Service's Endpoints,
//! and so an APIService backend), reached from the host through the pair.
//!
//! Made with `ip` from iproute2, which needs root (or CAP_NET_ADMIN); deleted, with
//! its veth pair, when dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context as _, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Namespaces made by this process so far, to keep names and subnets apart.
static MADE: AtomicU8 = AtomicU8::new(0);

pub struct NetNs {
    name: String,
    /// The host's end of the pair.
    pub host: Ipv4Addr,
    /// The namespace's end: the address to put into Endpoints.
    pub inside: Ipv4Addr,
}

impl NetNs {
    /// Makes a namespace with a /30 of its own in 10.128.0.0/9 (clear of the test
    /// ground's service range), chosen by process id and count so that test processes
    /// running side by side do not collide.
    pub fn create() -> anyhow::Result<Self> {
        let count = MADE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("jw{pid}n{count}");
        let (host_link, inside_link) = (format!("jw{pid}h{count}"), format!("jw{pid}i{count}"));
        let subnet = (pid & 0x3_ffff) << 3 | u32::from(count & 7);
        let base = Ipv4Addr::from(0x0a80_0000 | subnet << 2);
        let host = Ipv4Addr::from(u32::from(base) + 1);
        let inside = Ipv4Addr::from(u32::from(base) + 2);
        let netns = Self { name, host, inside };
        let steps: [&[&str]; 6] = [
            &["netns", "add", &netns.name],
            &["link", "add", &host_link, "type", "veth", "peer", "name", &inside_link, "netns", &netns.name],
            &["addr", "add", &format!("{host}/30"), "dev", &host_link],
            &["link", "set", &host_link, "up"],
            &["-n", &netns.name, "addr", "add", &format!("{inside}/30"), "dev", &inside_link],
            &["-n", &netns.name, "link", "set", &inside_link, "up"],
        ];
        for step in steps {
            ip(step)?;
        }
        Ok(netns)
    }

    /// A listener on `port` of the namespace's address, bound from a thread that joined
    /// the namespace for the purpose; the socket stays in the namespace, the rest of
    /// the process does not move.
    pub fn bind(&self, port: u16) -> anyhow::Result<std::net::TcpListener> {
        let path = format!("/var/run/netns/{}", self.name);
        let addr = SocketAddr::from((self.inside, port));
        let joined = std::thread::spawn(move || -> anyhow::Result<std::net::TcpListener> {
            let namespace = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).context("joining the namespace")?;
            let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        });
        joined.join().map_err(|_| anyhow::anyhow!("the binding thread panicked"))?
    }

    /// Forwards every connection to `port` inside the namespace to `to`, byte for
    /// byte (TLS passes through untouched), until the task is aborted.
    pub fn forward(&self, port: u16, to: SocketAddr) -> anyhow::Result<JoinHandle<()>> {
        let listener = TcpListener::from_std(self.bind(port)?)?;
        Ok(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so the pair.
        if let Err(err) = ip(&["netns", "delete", &self.name]) {
            eprintln!("removing network namespace {}: {err:#}", self.name);
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !output.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}
