//! The tunnels as the edge reads and touches them: the interface from netlink, WireGuard's
//! state from `wg show <if> dump`, and the endpoints set again after the uplink changes. `wg`
//! runs as a process, so the reads happen in a task of their own.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::tunnel::{self, TunnelReading, WgPeer};

/// How often tunnel health is read.
const TUNNEL_CHECK: Duration = Duration::from_secs(1);

/// Reads every tunnel's interface and WireGuard state every [`TUNNEL_CHECK`], in a task of its
/// own, and sends the readings.
pub(crate) fn spawn_tunnel_reader(
    handle: rtnetlink::Handle,
    interfaces: Vec<String>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Vec<TunnelReading>> {
    let (sender, receiver) = mpsc::channel(1);
    if interfaces.is_empty() {
        return receiver;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TUNNEL_CHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let mut readings = Vec::new();
            for interface in &interfaces {
                readings.push(read_tunnel(&handle, interface).await);
            }
            if sender.send(readings).await.is_err() {
                return;
            }
        }
    });
    receiver
}

async fn read_tunnel(handle: &rtnetlink::Handle, interface: &str) -> TunnelReading {
    let interface_up = match fieldnet::net::find_link(handle, interface).await {
        Ok(Some(link)) => link
            .header
            .flags
            .contains(rtnetlink::packet_route::link::LinkFlags::Up),
        _ => false,
    };
    let wireguard = if interface_up {
        read_wireguard(interface).await
    } else {
        Err(anyhow::anyhow!("interface {interface} is down or missing"))
    };
    if let Err(error) = &wireguard {
        tracing::debug!(tunnel = %interface, error = format!("{error:#}"), "reading WireGuard state");
    }
    TunnelReading {
        interface: interface.to_owned(),
        interface_up,
        collected: wireguard.is_ok(),
        handshake_age: wireguard
            .ok()
            .and_then(|peers| tunnel::newest_handshake_age(&peers, SystemTime::now())),
    }
}

/// Reads the interface's peers with `wg show <if> dump` (2 s at most).
pub async fn read_wireguard(interface: &str) -> anyhow::Result<Vec<WgPeer>> {
    use anyhow::Context as _;
    let output = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::process::Command::new("wg")
            .args(["show", interface, "dump"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("`wg show {interface} dump` took over 2 s"))?
    .with_context(|| format!("running `wg show {interface} dump` (wireguard-tools)"))?;
    anyhow::ensure!(
        output.status.success(),
        "`wg show {interface} dump`: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    tunnel::parse_dump(&String::from_utf8_lossy(&output.stdout)).map_err(|e| anyhow::anyhow!(e))
}

/// Sets every peer's endpoint on `interface` again, to the same address. WireGuard (the kernel
/// module and wireguard-go alike) remembers the source address, and wireguard-go the interface,
/// it last sent from; after the uplinks change, that is the dead uplink's, and the tunnel stays
/// silent until something resets it. Setting the endpoint forgets the cached source, so the
/// next packet takes the new default route. Returns how many peers were reset.
pub async fn reset_endpoints(interface: &str) -> anyhow::Result<usize> {
    let mut reset = 0;
    for peer in read_wireguard(interface).await? {
        let Some(endpoint) = &peer.endpoint else {
            continue;
        };
        let output = tokio::process::Command::new("wg")
            .args([
                "set",
                interface,
                "peer",
                &peer.public_key,
                "endpoint",
                endpoint,
            ])
            .kill_on_drop(true)
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "`wg set {interface} peer … endpoint {endpoint}`: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        reset += 1;
    }
    Ok(reset)
}
