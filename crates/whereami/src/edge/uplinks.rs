//! The uplinks by interface index: a query from a site address never arrives on one, so one
//! that does is forged (checked by `udp` from each datagram's IP_PKTINFO).

use std::sync::Arc;

/// The interfaces a site asker's query never arrives on: this appliance's uplinks, by index
/// (looked up again by [`refresh`](Self::refresh), as a modem's interface comes and goes).
#[derive(Debug, Default)]
pub struct Uplinks {
    names: Vec<String>,
    indexes: std::sync::RwLock<Arc<[u32]>>,
}

impl Uplinks {
    pub fn new(names: Vec<String>) -> Self {
        let uplinks = Self {
            names,
            indexes: std::sync::RwLock::new(Arc::from([])),
        };
        uplinks.refresh();
        uplinks
    }

    /// Looks the interfaces up again; one that is not there is skipped.
    pub fn refresh(&self) {
        let indexes: Vec<u32> = self
            .names
            .iter()
            .filter_map(|name| nix::net::if_::if_nametoindex(name.as_str()).ok())
            .collect();
        let mut current = self.indexes.write().unwrap_or_else(|p| p.into_inner());
        if **current != *indexes {
            *current = Arc::from(indexes);
        }
    }

    pub(crate) fn indexes(&self) -> Arc<[u32]> {
        Arc::clone(&self.indexes.read().unwrap_or_else(|p| p.into_inner()))
    }
}
