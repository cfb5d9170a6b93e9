//! The agent's side of takeover: the coordinator's decisions carried out (serving, the taken
//! network's address and routes, `dhcp/takeover/<network>`, gratuitous ARP).

use fieldnet::bus::topics;

use super::{Agent, now_ms};
use crate::edge::routes::{take_address, withdraw_address};
use crate::takeover::{Action, Role};

impl Agent {
    /// Re-decides who serves what, and carries it out.
    pub(super) async fn coordinate(&mut self) {
        let actions = self
            .coordinator
            .tick(now_ms(), self.server.leases().cursor());
        if actions.is_empty() {
            return;
        }
        for action in actions {
            self.carry_out(action).await;
        }
        self.metrics.serving.reset();
        for (network, state) in self.coordinator.states() {
            self.metrics
                .serving
                .with_label_values(&[network.as_str(), state.as_str()])
                .set(1);
        }
        // Our status changed: the peers should hear it now, not at their next pull.
        self.tell_peers();
    }

    async fn carry_out(&mut self, action: Action) {
        let (network, word) = match &action {
            Action::Serve { network, .. } => (network.clone(), "serve"),
            Action::Pause { network } => (network.clone(), "pause"),
            Action::Withdraw { network } => (network.clone(), "withdraw"),
        };
        self.metrics
            .takeovers
            .with_label_values(&[network.as_str(), word])
            .inc();
        let Some(edge) = self.edges.get(&network) else {
            return;
        };
        match action {
            Action::Serve {
                role: Role::Own, ..
            } => {
                self.server.serve(&network, true);
                tracing::info!(%network, "serving DHCP on own network");
            }
            Action::Serve {
                role: Role::Taken, ..
            } => {
                if let Err(error) = take_address(&self.netlink, &edge.leg()).await {
                    // Serving without the gateway address would hand out leases whose router
                    // is unreachable: keep trying on the next decision instead.
                    tracing::error!(%network, error = format!("{error:#}"), "cannot add the taken network's gateway address");
                    return;
                }
                self.server.serve_for_peer(&network);
                let body = topics::Takeover {
                    network: network.clone(),
                    gateway: edge.gateway,
                    owner: edge.owner,
                    since: now_ms(),
                };
                let _ = self
                    .bus
                    .publish(&topics::takeover_topic(&network), &body, true);
                tracing::warn!(%network, owner = edge.owner, gateway = %edge.gateway, "owner dead: network taken over");
            }
            Action::Pause { .. } => {
                self.server.serve(&network, false);
                tracing::info!(%network, "owner is back: stopped answering, waiting for it to store our leases");
            }
            Action::Withdraw { .. } => {
                self.server.serve(&network, false);
                withdraw_address(&self.netlink, &edge.leg()).await;
                let _ = self.bus.publish(
                    &topics::takeover_topic(&network),
                    &serde_json::Value::Null,
                    true,
                );
                tracing::info!(%network, owner = edge.owner, "network handed back");
            }
        }
        // Whoever answers now tells the clients where the gateway is.
        if self.server.serving().contains(&network)
            && let Err(error) = edge.prober.ask(edge.gateway, edge.gateway)
        {
            tracing::warn!(%network, %error, "sending gratuitous ARP");
        }
    }
}
