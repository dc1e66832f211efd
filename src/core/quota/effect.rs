//! What an upstream outcome means for the books: decided here once, for every outcome, so that
//! the edge only carries it.

use super::ledger::signed;
use crate::core::outcome::Outcome;
use crate::core::ratelimit::Refusal;

/// What the books should do with a request's booking once its attempt has an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The provider took the request and counts it: the booking stays, its tokens settled by
    /// the real usage when the answer reports it.
    Spent,
    /// The provider did not count the request (it never reached it, or refused it without
    /// reading it): the booking is given back whole.
    NotSpent,
    /// The provider read the request and refused it (another 4xx): the request counts, its
    /// tokens do not.
    RequestOnly,
    /// A 429 or a billing refusal: given back, and the organization cools down on the model.
    Refused(Refusal),
    /// 401 (the key, every model) or 403 (the key on this model): given back, the key blocked.
    KeyRefused { status: u16 },
}

impl Effect {
    pub fn of(outcome: &Outcome) -> Effect {
        match outcome {
            // A timeout or a bad answer came after the provider may have accepted the request:
            // keeping the booking never leaves the books under the provider's own count.
            Outcome::Success | Outcome::Timeout | Outcome::BadAnswer => Effect::Spent,
            Outcome::RateLimited(refusal) | Outcome::Billing(refusal) => Effect::Refused(*refusal),
            Outcome::Auth { status } => Effect::KeyRefused { status: *status },
            Outcome::Rejected(_) => Effect::RequestOnly,
            // Refused before any work, or no connection at all.
            Outcome::TooLarge(_)
            | Outcome::NotServed(_)
            | Outcome::Capacity
            | Outcome::ServerError { .. }
            | Outcome::Transport => Effect::NotSpent,
        }
    }

    /// The change to the booking of a request of `tokens`, given the real usage if known:
    /// (requests, tokens), signed.
    pub fn shift(&self, tokens: u64, counted: Option<u64>) -> (i64, i64) {
        let booked = signed(tokens);
        match self {
            Effect::Spent => (0, counted.map_or(0, |c| signed(c).saturating_sub(booked))),
            Effect::RequestOnly => (0, -booked),
            Effect::NotSpent | Effect::Refused(_) | Effect::KeyRefused { .. } => (-1, -booked),
        }
    }
}
