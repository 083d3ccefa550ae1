//! Virtual hosts: each has its own exchanges, queues, bindings and durable
//! store behind its own lock, and a connection lives in exactly one (the
//! one its connection.open named). Also the permission check RabbitMQ
//! makes before each operation on a resource.

use super::*;
use crate::auth::{AmqpAccess, AmqpPermission};

/// The index of a vhost in `amqp.vhosts`.
pub type VhostId = usize;

/// A connection id carries its vhost in the bits above this one, so every
/// call naming a connection finds its vhost without another lock.
const VHOST_SHIFT: u32 = 48;

pub(super) fn vhost_of(conn: ConnId) -> VhostId {
    (conn >> VHOST_SHIFT) as VhostId
}

pub(super) fn conn_id(vhost: VhostId, n: u64) -> ConnId {
    ((vhost as u64) << VHOST_SHIFT) | n
}

/// One virtual host: its state and its fsync rounds.
pub(super) struct Vhost {
    pub(super) name: String,
    pub(super) state: Mutex<State>,
    /// See [`AmqpHub::sync_covering`]: the highest write number of this
    /// vhost's store the last completed fsync round covered.
    pub(super) synced: tokio::sync::Mutex<u64>,
}

/// Who a connection is and what it may do in its vhost.
#[derive(Debug, Clone, Default)]
pub struct ConnectionAccess {
    pub user: String,
    /// `None`: no `[[amqp]]` permissions are configured, everything is allowed.
    pub permission: Option<Arc<AmqpPermission>>,
}

/// Where a vhost's durable state lives: `/` where it always has (so data
/// directories from before vhosts load unchanged), any other vhost under
/// `amqp/vhosts/<hex of its name>` (any name is a safe directory name then).
pub fn vhost_dir(data_dir: &Path, name: &str) -> PathBuf {
    let amqp = data_dir.join("amqp");
    if name == "/" {
        return amqp;
    }
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    amqp.join("vhosts").join(hex)
}

/// Creates a vhost's built-in exchanges and, with disk storage, recovers
/// its durable exchanges, queues, bindings and persistent messages.
pub(super) fn open_vhost(
    name: &str,
    config: &AmqpConfig,
    data_dir: &Path,
) -> Result<Vhost, StorageError> {
    let mut state = State {
        vhost: name.to_string(),
        ..State::default()
    };
    for (x, kind) in BUILTIN_EXCHANGES {
        state.exchanges.insert(
            x.to_string(),
            Exchange {
                name: x.to_string(),
                kind,
                durable: true,
                auto_delete: false,
                internal: false,
                args: FieldTable::default(),
                bindings: Vec::new(),
            },
        );
    }
    if config.storage == StorageMode::Disk {
        let (store, definitions) = Store::open(&vhost_dir(data_dir, name))?;
        state.store = Some(store);
        for def in definitions {
            if let Err(e) = state.replay(def, config) {
                tracing::warn!("amqp: vhost '{name}': skipping a stored definition: {e}");
            }
        }
        let recovered: usize = state.queues.values().map(|q| q.messages.len()).sum();
        state.compact_definitions()?;
        if recovered > 0 || !state.queues.is_empty() {
            tracing::info!(
                "amqp: vhost '{name}': recovered {} durable queues holding {recovered} messages",
                state.queues.len()
            );
        }
    }
    Ok(Vhost {
        name: name.to_string(),
        state: Mutex::new(state),
        synced: tokio::sync::Mutex::new(0),
    })
}

impl AmqpHub {
    /// The vhost called `name`, if `amqp.vhosts` has it.
    pub fn vhost(&self, name: &str) -> Option<VhostId> {
        self.vhosts.iter().position(|v| v.name == name)
    }

    pub(super) fn state_of(&self, conn: ConnId) -> MutexGuard<'_, State> {
        lock(&self.vhosts[vhost_of(conn)].state)
    }

    /// Messages ready in `queue` of `vhost` (tests and metrics).
    pub fn queue_len_in(&self, vhost: &str, queue: &str) -> Option<usize> {
        let v = self.vhosts.get(self.vhost(vhost)?)?;
        lock(&v.state).queues.get(queue).map(|q| q.messages.len())
    }
}

pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    /// RabbitMQ's check before an operation on a resource: ACCESS_REFUSED
    /// (403, closing the channel) naming the access, the resource and the
    /// method when the connection's permission does not grant it.
    pub(super) fn check(
        &mut self,
        conn: ConnId,
        access: AmqpAccess,
        resource: &str,
        name: &str,
        method: &str,
    ) -> AmqpResult<()> {
        let Some(c) = self.conns.get(&conn) else {
            return Ok(());
        };
        let Some(permission) = &c.access.permission else {
            return Ok(());
        };
        // RabbitMQ checks the default exchange under this name.
        let name = match (resource, name) {
            ("exchange", "") => "amq.default",
            _ => name,
        };
        if permission.allows(access, name) {
            return Ok(());
        }
        let text = format!(
            "ACCESS_REFUSED - {} access to {resource} '{name}' in vhost '{}' refused for user '{}' ({method})",
            access.as_str(),
            self.vhost,
            c.access.user
        );
        self.refused.push("access_refused");
        Err(AmqpError::soft(ACCESS_REFUSED, text))
    }
}
