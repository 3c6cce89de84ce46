//! Runnable examples of Cairn (`cargo run --example <name>`), and the simulated outside
//! services they call. The services live in memory, keyed the way real ones would be — the
//! payment service deduplicates charges by idempotency key, as Stripe-like APIs do — so the
//! examples can show what Cairn guarantees without a network.

use std::collections::HashMap;
use std::sync::Mutex;

/// A payment provider that charges at most once per idempotency key.
#[derive(Debug, Default)]
pub struct PaymentService {
    charges: Mutex<HashMap<String, Charge>>,
    calls: Mutex<u64>,
}

/// One charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub id: String,
    pub amount_cents: u64,
    pub refunded: bool,
}

impl PaymentService {
    /// Charges `amount_cents` under `idempotency_key`; a repeated key returns the first charge.
    pub fn charge(&self, idempotency_key: &str, amount_cents: u64) -> Charge {
        *self.calls.lock().unwrap() += 1;
        let mut charges = self.charges.lock().unwrap();
        let next = charges.len() + 1;
        charges
            .entry(idempotency_key.to_string())
            .or_insert_with(|| Charge {
                id: format!("ch_{next:04}"),
                amount_cents,
                refunded: false,
            })
            .clone()
    }

    /// Refunds the charge made under `idempotency_key` (idempotent).
    pub fn refund(&self, idempotency_key: &str) -> bool {
        let mut charges = self.charges.lock().unwrap();
        match charges.get_mut(idempotency_key) {
            Some(charge) => {
                charge.refunded = true;
                true
            }
            None => false,
        }
    }

    /// Every charge made, by idempotency key.
    pub fn charges(&self) -> HashMap<String, Charge> {
        self.charges.lock().unwrap().clone()
    }

    /// How many charge requests reached the service (retries included).
    pub fn calls(&self) -> u64 {
        *self.calls.lock().unwrap()
    }
}
