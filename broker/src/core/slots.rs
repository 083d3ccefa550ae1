//! Connection slots: every connection holds one permit of the broker-wide
//! limit (`server.max_connections`) and, where its protocol has a limit of
//! its own (`<protocol>.max_connections`), one of that too, so that one
//! protocol's clients cannot take every slot from the others.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits a protocol's connections count against.
#[derive(Debug, Clone)]
pub struct ConnectionSlots {
    global: Arc<Semaphore>,
    protocol: Option<Arc<Semaphore>>,
}

/// A connection's place under both limits; dropping it frees both.
#[derive(Debug)]
pub struct Slot {
    _protocol: Option<OwnedSemaphorePermit>,
    _global: OwnedSemaphorePermit,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    /// `server.max_connections`, over all protocols.
    Broker,
    /// The protocol's own `max_connections`.
    Protocol,
}

impl SlotRefusal {
    /// The `broker_connections_refused_total{kind}` label.
    pub fn kind(self) -> &'static str {
        match self {
            SlotRefusal::Broker => "max_connections",
            SlotRefusal::Protocol => "protocol_max_connections",
        }
    }
}

impl ConnectionSlots {
    /// `global` is shared by every protocol; `protocol_max` is this
    /// protocol's own limit (`None`: only the global one applies).
    pub fn new(global: Arc<Semaphore>, protocol_max: Option<usize>) -> ConnectionSlots {
        ConnectionSlots {
            global,
            protocol: protocol_max.map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
        }
    }

    /// Takes a slot without waiting: the protocol's limit is checked first,
    /// so a protocol at its own limit never touches the shared one.
    pub fn take(&self) -> Result<Slot, SlotRefusal> {
        let protocol = match &self.protocol {
            Some(p) => Some(
                p.clone()
                    .try_acquire_owned()
                    .map_err(|_| SlotRefusal::Protocol)?,
            ),
            None => None,
        };
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| SlotRefusal::Broker)?;
        Ok(Slot {
            _protocol: protocol,
            _global: global,
        })
    }

    /// Free slots under the global limit.
    pub fn available_permits(&self) -> usize {
        self.global.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_limit_refuses_first_and_frees_on_drop() {
        let global = Arc::new(Semaphore::new(3));
        let kafka = ConnectionSlots::new(global.clone(), Some(1));
        let mqtt = ConnectionSlots::new(global.clone(), None);
        let k1 = kafka.take().unwrap();
        assert_eq!(kafka.take().unwrap_err(), SlotRefusal::Protocol);
        // The refused attempt took nothing from the shared limit.
        assert_eq!(global.available_permits(), 2);
        let _m1 = mqtt.take().unwrap();
        let _m2 = mqtt.take().unwrap();
        assert_eq!(mqtt.take().unwrap_err(), SlotRefusal::Broker);
        drop(k1);
        assert_eq!(mqtt.available_permits(), 1);
        // Kafka's own slot came back too, but the shared limit decides now.
        let _m3 = mqtt.take().unwrap();
        assert_eq!(kafka.take().unwrap_err(), SlotRefusal::Broker);
        assert_eq!(SlotRefusal::Broker.kind(), "max_connections");
        assert_eq!(SlotRefusal::Protocol.kind(), "protocol_max_connections");
    }
}
