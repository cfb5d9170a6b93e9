//! Typed bodies of the bus topics. Every topic an agent publishes is named and typed here, so
//! publisher and subscribers agree at compile time; `docs/bus.md` lists them for humans.

use serde::{Deserialize, Serialize};

/// Retained, published by the broker itself: the named clients connected right now.
pub const TOPIC_AGENTS: &str = "bus/agents";

/// Body of [`TOPIC_AGENTS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsAlive {
    pub agents: Vec<AgentPresence>,
}

/// One connected agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPresence {
    pub name: String,
    pub pid: u32,
    /// Connected since, in milliseconds since the Unix epoch.
    pub since: u64,
}

/// Retained, one per agent: `agent/<name>`, published by every agent at start with its version.
pub fn agent_topic(name: &str) -> String {
    format!("agent/{name}")
}

/// Body of `agent/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStarted {
    pub version: String,
    pub pid: u32,
    /// Where its metrics and health endpoint listen.
    pub metrics: String,
}
