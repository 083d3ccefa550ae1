//! Idempotent producers: InitProducerId hands out producer ids, and each
//! partition remembers the last batches of every producer so that a retried
//! batch is acknowledged again instead of stored twice, and a gap in the
//! sequence numbers is refused (OUT_OF_ORDER_SEQUENCE_NUMBER).
//!
//! The state lives in memory: after a restart a producer's next batch is
//! accepted whatever its sequence (as for a producer the broker never saw).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::topic::AppendError;
use crate::storage::BatchHeader;

/// Batches remembered per producer and partition (as many as a producer may
/// have in flight: librdkafka and the Java client use at most 5).
const REMEMBERED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy)]
struct SentBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerState {
    epoch: i16,
    recent: VecDeque<SentBatch>,
}

/// What to do with an incoming batch.
#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    /// Already stored at this base offset: acknowledge, do not append.
    Duplicate {
        base_offset: i64,
    },
}

#[derive(Debug, Default)]
pub struct ProducerStates {
    by_id: HashMap<i64, ProducerState>,
}

impl ProducerStates {
    pub fn check(&mut self, batch: &BatchHeader) -> Result<SequenceCheck, AppendError> {
        if batch.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(state) = self.by_id.get_mut(&batch.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if batch.producer_epoch < state.epoch {
            return Err(AppendError::FencedEpoch {
                producer_id: batch.producer_id,
                current: state.epoch,
                got: batch.producer_epoch,
            });
        }
        if batch.producer_epoch > state.epoch {
            // A new epoch starts a new sequence.
            state.epoch = batch.producer_epoch;
            state.recent.clear();
            return Ok(SequenceCheck::Append);
        }
        if let Some(seen) = state.recent.iter().find(|b| {
            b.first_sequence == batch.base_sequence && b.last_sequence == batch.last_sequence()
        }) {
            return Ok(SequenceCheck::Duplicate {
                base_offset: seen.base_offset,
            });
        }
        if let Some(last) = state.recent.back() {
            let expected = if last.last_sequence == i32::MAX {
                0
            } else {
                last.last_sequence + 1
            };
            if batch.base_sequence != expected {
                return Err(AppendError::OutOfOrderSequence {
                    producer_id: batch.producer_id,
                    expected,
                    got: batch.base_sequence,
                });
            }
        }
        Ok(SequenceCheck::Append)
    }

    pub fn record(&mut self, batch: &BatchHeader, base_offset: i64) {
        if batch.producer_id < 0 {
            return;
        }
        let state = self.by_id.entry(batch.producer_id).or_default();
        state.epoch = batch.producer_epoch;
        if state.recent.len() == REMEMBERED_BATCHES {
            state.recent.pop_front();
        }
        state.recent.push_back(SentBatch {
            first_sequence: batch.base_sequence,
            last_sequence: batch.last_sequence(),
            base_offset,
        });
    }
}

/// Hands out producer ids, unique across restarts: they start from the
/// start-up time in milliseconds.
pub struct ProducerIds(AtomicI64);

impl Default for ProducerIds {
    fn default() -> Self {
        ProducerIds(AtomicI64::new(crate::storage::millis_since_epoch(
            std::time::SystemTime::now(),
        )))
    }
}

impl ProducerIds {
    pub fn handle(&self, req: InitProducerIdRequest) -> InitProducerIdResponse {
        let mut resp = InitProducerIdResponse::default();
        if req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty())
        {
            // Transactions are not implemented; idempotence alone needs no transactional id.
            resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            resp.producer_id = ProducerId(-1);
            resp.producer_epoch = -1;
            return resp;
        }
        if req.producer_id.0 >= 0 && req.producer_epoch >= 0 {
            // KIP-360: an existing producer asks for a bumped epoch.
            resp.producer_id = req.producer_id;
            resp.producer_epoch = req.producer_epoch.checked_add(1).unwrap_or(0);
        } else {
            resp.producer_id = ProducerId(self.0.fetch_add(1, Ordering::Relaxed));
            resp.producer_epoch = 0;
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::kafka::batch_from;

    fn header(pid: i64, epoch: i16, seq: i32, n: usize) -> BatchHeader {
        let values: Vec<&str> = std::iter::repeat_n("v", n).collect();
        BatchHeader::parse(&batch_from(&values, 0, pid, epoch, seq)).unwrap()
    }

    #[test]
    fn sequence_rules() {
        let mut s = ProducerStates::default();
        let a = header(1, 0, 0, 2);
        assert_eq!(s.check(&a).unwrap(), SequenceCheck::Append);
        s.record(&a, 10);
        assert_eq!(
            s.check(&a).unwrap(),
            SequenceCheck::Duplicate { base_offset: 10 }
        );
        let b = header(1, 0, 2, 1);
        assert_eq!(s.check(&b).unwrap(), SequenceCheck::Append);
        s.record(&b, 12);
        assert!(matches!(
            s.check(&header(1, 0, 5, 1)),
            Err(AppendError::OutOfOrderSequence { expected: 3, .. })
        ));
        // A bumped epoch restarts the sequence; the old epoch is fenced.
        assert_eq!(s.check(&header(1, 1, 0, 1)).unwrap(), SequenceCheck::Append);
        s.record(&header(1, 1, 0, 1), 13);
        assert!(matches!(
            s.check(&header(1, 0, 3, 1)),
            Err(AppendError::FencedEpoch { .. })
        ));
        // Non-idempotent batches are never checked.
        assert_eq!(
            s.check(&header(-1, -1, -1, 1)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn ids_are_distinct_and_transactions_refused() {
        let ids = ProducerIds::default();
        let a = ids.handle(
            InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        let b = ids.handle(
            InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        assert_eq!(a.error_code, 0);
        assert_ne!(a.producer_id, b.producer_id);
        assert_eq!(a.producer_epoch, 0);
        let bumped = ids.handle(
            InitProducerIdRequest::default()
                .with_producer_id(a.producer_id)
                .with_producer_epoch(0),
        );
        assert_eq!(
            (bumped.producer_id, bumped.producer_epoch),
            (a.producer_id, 1)
        );
        let tx = ids.handle(InitProducerIdRequest::default().with_transactional_id(Some(
            kafka_protocol::messages::TransactionalId(
                kafka_protocol::protocol::StrBytes::from_static_str("tx"),
            ),
        )));
        assert_ne!(tx.error_code, 0);
    }
}
