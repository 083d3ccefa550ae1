//! What durable AMQP state needs from the hub: recording definitions,
//! collecting files to fsync, replaying definitions at start-up, and
//! compacting the definitions file.

use super::*;

impl State {
    pub(super) fn persist(&mut self, def: store::Definition) {
        if let Some(store) = &mut self.store {
            if let Err(e) = store.record(&def) {
                tracing::error!("amqp: cannot record a definition: {e}");
            }
            self.write_seq += 1;
        }
    }

    pub(super) fn take_sync_handles(&mut self) -> Vec<File> {
        let mut files = Vec::new();
        for name in std::mem::take(&mut self.dirty_queues) {
            if let Some(log) = self.queues.get_mut(&name).and_then(|q| q.log.as_mut()) {
                match log.take_sync_handle() {
                    Ok(Some(f)) => files.push(f),
                    Ok(None) => {}
                    Err(e) => tracing::error!("amqp: {e}"),
                }
            }
        }
        if let Some(store) = &mut self.store {
            match store.take_sync_handle() {
                Ok(Some(f)) => files.push(f),
                Ok(None) => {}
                Err(e) => tracing::error!("amqp: {e}"),
            }
        }
        files
    }

    /// Applies one stored definition at start-up.
    pub(super) fn replay(
        &mut self,
        def: store::Definition,
        config: &AmqpConfig,
    ) -> Result<(), String> {
        match def {
            store::Definition::ExchangeDeclare(m) => {
                self.exchange_declare(&m).map_err(|e| e.to_string())
            }
            store::Definition::ExchangeDelete(name) => {
                self.exchanges.remove(&name);
                Ok(())
            }
            store::Definition::QueueDeclare(m) => {
                let name = m.queue.as_str().to_string();
                // Recovery must not append a second declaration.
                let store = self.store.take();
                let ok = self.queue_declare(0, &m, config);
                self.store = store;
                ok.map_err(|e| e.to_string())?;
                let Some(store) = &mut self.store else {
                    return Ok(());
                };
                let (log, messages) = store.open_queue_log(&name).map_err(|e| e.to_string())?;
                let q = self.queues.get_mut(&name).expect("declared above");
                for m in messages {
                    q.messages.push_recovered(m);
                }
                q.log = Some(log);
                Ok(())
            }
            store::Definition::QueueDelete(name) => {
                let store = self.store.take();
                self.queues.remove(&name);
                self.remove_bindings_to(&Destination::Queue(name));
                self.store = store;
                Ok(())
            }
            store::Definition::Bind { source, binding } => {
                match self.exchanges.get_mut(&source) {
                    Some(x) if !x.bindings.contains(&binding) => x.bindings.push(binding),
                    Some(_) => {}
                    None => return Err(format!("binding from unknown exchange '{source}'")),
                }
                Ok(())
            }
            store::Definition::Unbind { source, binding } => {
                if let Some(x) = self.exchanges.get_mut(&source) {
                    x.bindings.retain(|b| b != &binding);
                }
                Ok(())
            }
        }
    }

    /// Rewrites the definitions file with only what exists now.
    pub(super) fn compact_definitions(&mut self) -> Result<(), StorageError> {
        if self.store.is_none() {
            return Ok(());
        }
        let mut defs = Vec::new();
        for x in self.exchanges.values() {
            if x.durable && !BUILTIN_EXCHANGES.iter().any(|(n, _)| *n == x.name) {
                defs.push(store::Definition::ExchangeDeclare(exchange::Declare {
                    exchange: x.name.as_str().into(),
                    kind: x.kind.as_str().into(),
                    passive: false,
                    durable: true,
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    nowait: false,
                    arguments: x.args.clone(),
                }));
            }
        }
        for q in self.queues.values().filter(|q| q.durable) {
            defs.push(store::Definition::QueueDeclare(queue::Declare {
                queue: q.name.as_str().into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: q.auto_delete,
                nowait: false,
                arguments: q.args.clone(),
            }));
        }
        for x in self.exchanges.values().filter(|x| x.durable) {
            for b in x
                .bindings
                .iter()
                .filter(|b| self.destination_durable(&b.destination))
            {
                defs.push(store::Definition::Bind {
                    source: x.name.clone(),
                    binding: b.clone(),
                });
            }
        }
        match &mut self.store {
            Some(store) => store.rewrite(&defs),
            None => Ok(()),
        }
    }
}
