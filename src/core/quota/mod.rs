//! The quota ledger, on two levels, for many isolates in many locations.
//!
//! - **The bank** ([`bank`], one Durable Object per provider and organization) holds the truth
//!   per organization and model: the four windows ([`ledger`]), cooldowns, refused keys. It
//!   books requests synchronously and grants **leases**: slices of what is left, booked up
//!   front, so that what the books show never exceeds a limit however isolates interleave.
//! - **The isolate** ([`holdings`]) admits a request from its lease with no call at all,
//!   choosing the organization from its snapshot of the bank's books (headroom, or prompt
//!   affinity by [`choose`]); it renews leases, returns what it did not use and reports real
//!   usage, headers, 429s and refused keys in batches, in the background ([`lease`] sizes the
//!   leases). With no lease (a quiet isolate, or limits too small to slice) it books
//!   synchronously, exactly.
//!
//! [`effect`] says once what each upstream outcome means for a booking; [`wire`] is the
//! protocol between isolate and bank; [`status`] renders the books for the operator.

pub mod bank;
pub mod choose;
pub mod effect;
pub mod holdings;
pub mod lease;
pub mod ledger;
pub mod rows;
pub mod status;
pub mod upkeep;
pub mod wire;

pub use bank::OrgLedger;
pub use choose::{caches_prompts, prefix_hash};
pub use effect::Effect;
pub use holdings::{Admission, Call, Holdings, Offer, Shard};
pub use ledger::{cooldown_until, Books, Usage, Windows};
pub use wire::{apply, Command, KeyCard, ModelOption, Reply, Source, Ticket};

use super::config::{Config, Provider, Target};

/// One step of finding a key for a request, in the candidates' order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'c> {
    /// A target whose provider tracks no limits for its model: its first usable key, no
    /// booking.
    Direct(&'c Target),
    /// A run of consecutive targets of one provider that tracks their limits: booked on one
    /// of its organizations, from a lease or with that organization's bank.
    Book {
        provider: &'c Provider,
        targets: Vec<&'c Target>,
        /// The models of `targets`, in order.
        options: Vec<ModelOption>,
        /// The provider's organizations with their usable keys, in configuration order.
        offers: Vec<Offer>,
        /// Whether each option's model caches prompts (so the prefix hash chooses).
        caching: Vec<bool>,
    },
}

/// Plans the steps for `targets` (the classifier's candidates, in order): consecutive targets
/// of one provider with tracked limits form one step, so that a request books once per such
/// provider it may use, and never for providers that track nothing.
pub fn plan<'c>(config: &'c Config, targets: &[&'c Target]) -> Vec<Step<'c>> {
    let mut steps: Vec<Step<'c>> = Vec::new();
    for target in targets {
        let Some(provider) = config.providers.get(target.provider) else {
            continue;
        };
        let Some(limits) = provider.limits.get(&target.name) else {
            steps.push(Step::Direct(target));
            continue;
        };
        let option = ModelOption {
            model: target.name.clone(),
            limits: *limits,
        };
        if let Some(Step::Book {
            provider: p,
            targets,
            options,
            caching,
            ..
        }) = steps.last_mut()
        {
            if p.name == provider.name {
                targets.push(target);
                caching.push(caches_prompts(&option.model));
                options.push(option);
                continue;
            }
        }
        steps.push(Step::Book {
            provider,
            targets: vec![target],
            caching: vec![caches_prompts(&option.model)],
            options: vec![option],
            offers: offers(provider),
        });
    }
    steps
}

/// A provider's organizations, in configuration order, each with its keys whose secret is set.
pub fn offers(provider: &Provider) -> Vec<Offer> {
    let mut offers: Vec<Offer> = Vec::new();
    for key in provider.keys.iter().filter(|k| k.value.is_some()) {
        let card = KeyCard {
            id: key.id.clone(),
            fingerprint: key.fingerprint.clone(),
        };
        match offers.iter_mut().find(|o| o.org == key.org) {
            Some(offer) => offer.keys.push(card),
            None => offers.push(Offer {
                org: key.org.clone(),
                keys: vec![card],
            }),
        }
    }
    offers
}

/// The banks of every organization in memory, by shard name: what the edge's Durable Objects
/// are, for tests of the core.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Banks(pub std::collections::BTreeMap<String, OrgLedger>);

#[cfg(test)]
impl Banks {
    pub fn bank(&mut self, shard: &Shard) -> &mut OrgLedger {
        self.0.entry(shard.name()).or_default()
    }

    /// Answers a call as the shard's bank would.
    pub fn call(&mut self, shard: &Shard, command: Command, now_ms: u64) -> Reply {
        apply(
            self.bank(shard),
            command,
            now_ms,
            &mut bank::Dirty::default(),
        )
    }
}

#[cfg(test)]
mod tests;
