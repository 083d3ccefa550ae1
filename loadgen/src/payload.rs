//! The 24-byte header every load message carries at the start of its payload.
//!
//! Layout (big endian): magic `u32`, publisher id `u32`, sequence `u64`,
//! intended send time `u64` in nanoseconds since [`epoch`]. All clients run
//! in this process, so one monotonic epoch serves publishers and subscribers.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::spec::MIN_PAYLOAD_BYTES;

/// "LGB1": marks a payload written by this load generator.
pub const MAGIC: u32 = 0x4C47_4231;

/// Header length; equal to the smallest payload a workload may ask for.
pub const HEADER_LEN: usize = MIN_PAYLOAD_BYTES;

/// The process-wide time origin of every timestamp in a header.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `at` (0 for instants before the epoch).
pub fn nanos_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// The instant `nanos` after [`epoch`].
pub fn instant_from_nanos(nanos: u64) -> Instant {
    epoch() + Duration::from_nanos(nanos)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub publisher: u32,
    pub sequence: u64,
    /// Intended send time, nanoseconds since [`epoch`].
    pub intended_nanos: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("payload of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    #[error("payload does not start with the load generator's magic number")]
    BadMagic,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `payload`.
    ///
    /// Panics if `payload` is shorter than the header; workloads are
    /// validated to have at least that many bytes.
    pub fn encode_into(&self, payload: &mut [u8]) {
        let h = &mut payload[..HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        h[4..8].copy_from_slice(&self.publisher.to_be_bytes());
        h[8..16].copy_from_slice(&self.sequence.to_be_bytes());
        h[16..24].copy_from_slice(&self.intended_nanos.to_be_bytes());
    }

    pub fn decode(payload: &[u8]) -> Result<Header, HeaderError> {
        if payload.len() < HEADER_LEN {
            return Err(HeaderError::TooShort(payload.len()));
        }
        let u32_at = |i: usize| u32::from_be_bytes(payload[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(0) != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        Ok(Header {
            publisher: u32_at(4),
            sequence: u64_at(8),
            intended_nanos: u64_at(16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let header = Header {
            publisher: 7,
            sequence: 0x0102_0304_0506_0708,
            intended_nanos: 123_456_789_012,
        };
        let mut payload = vec![0xAA; 64];
        header.encode_into(&mut payload);
        assert_eq!(&payload[..4], b"LGB1");
        assert_eq!(&payload[4..8], &[0, 0, 0, 7]);
        assert_eq!(&payload[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            payload[24..],
            [0xAA; 40],
            "filler after the header is untouched"
        );
        assert_eq!(Header::decode(&payload), Ok(header));
        assert_eq!(Header::decode(&payload[..HEADER_LEN]), Ok(header));
    }

    #[test]
    fn foreign_payloads_are_refused() {
        assert_eq!(Header::decode(&[0; 10]), Err(HeaderError::TooShort(10)));
        assert_eq!(Header::decode(&[0; 24]), Err(HeaderError::BadMagic));
    }

    #[test]
    fn epoch_conversions_round_trip() {
        let later = epoch() + Duration::from_millis(1500);
        let nanos = nanos_since_epoch(later);
        assert_eq!(nanos, 1_500_000_000);
        assert_eq!(instant_from_nanos(nanos), later);
        assert_eq!(nanos_since_epoch(epoch()), 0);
    }
}
