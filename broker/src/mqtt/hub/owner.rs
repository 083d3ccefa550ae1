//! Who holds a client id: the user a session was opened by, so that only
//! the same user can take the client id (and its session) over.

use std::sync::Arc;

use super::{lock, MqttHub};

impl MqttHub {
    /// The owner of the session held under `client_id`: `None` when there is
    /// no session (or its owner is not known, e.g. a placeholder being
    /// attached), `Some(None)` for one opened anonymously.
    pub fn session_owner(&self, client_id: &str) -> Option<Option<Arc<str>>> {
        let session = lock(&self.sessions).get(client_id).cloned()?;
        session.owner()
    }
}
