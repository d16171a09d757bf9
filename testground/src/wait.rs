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
