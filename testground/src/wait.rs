//! Polling with a deadline, and free loopback ports.

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

/// Calls `probe` every `every` until it returns `Ok(Some(_))`, and fails after `timeout`
/// with the last error or the last "not yet" it saw.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "not yet".to_owned(),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(every).await;
    }
}

/// A free address for one child process on a loopback IP of its own (127.x.y.z,
/// varied by process, call and time). A port alone is chosen free and then released,
/// so a test running beside it could be handed the same one, and a readiness check
/// would then find the other test's process.
pub fn own_address() -> anyhow::Result<std::net::SocketAddr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503)
        ^ nanos.rotate_left(13);
    let [a, b, c, _] = seed.to_le_bytes();
    let ip = Ipv4Addr::new(127, 1 + a % 254, b, 1 + c % 254);
    Ok(TcpListener::bind((ip, 0))?.local_addr()?)
}

/// A port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `count` distinct ports on 127.0.0.1 that nothing listened on a moment ago. They are
/// held together while chosen: released one by one, the kernel may hand the same
/// port out twice.
pub fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..count).map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).collect::<Result<Vec<_>, _>>()?;
    Ok(held.iter().map(|listener| listener.local_addr().map(|a| a.port())).collect::<Result<Vec<_>, _>>()?)
}
