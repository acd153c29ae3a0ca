//! A cap on open client connections per listener (BAD-INPUT 18: a connection flood must not
//! exhaust file descriptors or starve existing clients). Past the cap a new connection is
//! accepted and closed at once, and counted, rather than left in the kernel's backlog where it
//! would look like a hang.

use crate::metrics::{Api, ApiLabels, Metrics};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    api: Api,
}

/// Held for the life of one connection; keeps the open-connections gauge honest.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl ConnectionLimit {
    pub fn new(max: usize, api: Api) -> Self {
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            api,
        }
    }

    /// A slot for a new connection, or `None` (counted as refused) when the cap is reached.
    pub fn try_acquire(&self, metrics: &Metrics) -> Option<ConnectionSlot> {
        let labels = ApiLabels { api: self.api };
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                metrics.connections_total.get_or_create(&labels).inc();
                let gauge = metrics.connections.get_or_create(&labels).clone();
                gauge.inc();
                Some(ConnectionSlot {
                    _permit: permit,
                    gauge,
                })
            }
            Err(_) => {
                metrics.connections_refused.get_or_create(&labels).inc();
                None
            }
        }
    }
}
