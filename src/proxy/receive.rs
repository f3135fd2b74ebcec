//! Receives one request body into memory, within `capture.max_body_bytes`
//! and the shared [`Budget`]: every byte buffered is reserved before it is
//! kept, and the reservation travels with the body until the pipeline is
//! done with it.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::budget::{Budget, Reservation};

/// Why a body was not received.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Over `capture.max_body_bytes`.
    #[error("the body is larger than capture.max_body_bytes")]
    TooLarge,
    /// The budget for buffered bodies cannot hold it now.
    #[error("the budget for buffered request bodies is spent")]
    OverBudget,
    /// The connection broke off or sent a malformed body.
    #[error("{0}")]
    Broken(String),
}

/// The smallest buffer growth: small bodies take one allocation.
const MIN_GROWTH: usize = 8 * 1024;

/// Reads the whole body. The buffer grows by doubling, never past what the
/// body can need (its declared length, or the limit), and each growth is
/// reserved first, so the budget counts what is really allocated.
pub async fn receive(
    mut body: Incoming,
    declared: Option<u64>,
    max: u64,
    budget: &Budget,
) -> Result<(Bytes, Reservation), ReceiveError> {
    let mut reservation = budget.reservation();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReceiveError::Broken(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry no body bytes
        };
        let needed = buf.len() + data.len();
        if needed as u64 > max {
            return Err(ReceiveError::TooLarge);
        }
        if needed > buf.capacity() {
            let ceiling = declared.unwrap_or(max).min(max).max(needed as u64) as usize;
            let want = (buf.capacity() * 2)
                .max(needed)
                .max(MIN_GROWTH)
                .min(ceiling);
            if !reservation.grow((want - buf.capacity()) as u64) {
                return Err(ReceiveError::OverBudget);
            }
            buf.reserve_exact(want - buf.len());
        }
        // Copied out of hyper's read buffer, so the connection can reuse it
        // instead of keeping a larger allocation alive for a few bytes.
        buf.extend_from_slice(&data);
    }
    Ok((Bytes::from(buf), reservation))
}
