//! Single-flight: one computation per key at a time in this process.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;

use super::backend::{AnyValue, Key, TagEpoch};

/// What a finished computation left for the callers that waited on it: the value (an
/// `Arc<T>`) with the tag epochs captured before it was computed, or the error (an
/// `Arc<E>`), type-erased.
pub(crate) type Outcome = Result<(AnyValue, Arc<[TagEpoch]>), AnyValue>;

type Slot = watch::Receiver<Option<Outcome>>;

/// Computations in flight, by key. An entry exists only while its computation runs: the
/// leader's [`Leader`] guard removes it when the computation ends or is dropped.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Key, Slot>>,
}

/// What a caller of [`Flights::join`] does.
pub(crate) enum Join {
    /// Nothing is in flight for the key: the caller computes and publishes.
    Lead(Leader),
    /// Another caller computes: wait with [`Follower::wait`].
    Follow(Follower),
}

impl Flights {
    /// Leads the computation for `key`, or follows the one in flight.
    pub(crate) fn join(self: &Arc<Self>, key: &Key) -> Join {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = map.get(key) {
            return Join::Follow(Follower { slot: slot.clone() });
        }
        let (sender, receiver) = watch::channel(None);
        map.insert(key.clone(), receiver);
        Join::Lead(Leader {
            flights: Arc::clone(self),
            key: key.clone(),
            sender,
        })
    }

    /// Leads the computation for `key` if none is in flight.
    pub(crate) fn try_lead(self: &Arc<Self>, key: &Key) -> Option<Leader> {
        match self.join(key) {
            Join::Lead(leader) => Some(leader),
            Join::Follow(_) => None,
        }
    }

    /// Number of keys in flight.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The right and duty to compute a key. Dropping it (completed or cancelled) removes the
/// key from the flights; followers of a leader dropped without an outcome are told so.
#[derive(Debug)]
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: Key,
    sender: watch::Sender<Option<Outcome>>,
}

impl Leader {
    /// Hands `outcome` to every follower.
    pub(crate) fn publish(self, outcome: Outcome) {
        self.sender.send_replace(Some(outcome));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut map = self
            .flights
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&self.key)
            .is_some_and(|slot| slot.same_channel(&self.sender.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

/// A caller waiting for another's computation.
#[derive(Debug)]
pub(crate) struct Follower {
    slot: Slot,
}

impl Follower {
    /// The leader's outcome, or `None` when the leader was dropped without one (cancelled):
    /// the caller should look again and may lead.
    pub(crate) async fn wait(mut self) -> Option<Outcome> {
        match self.slot.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::from_storage(name.to_owned())
    }

    #[tokio::test]
    async fn followers_get_the_leaders_outcome_and_the_entry_goes() {
        let flights = Arc::new(Flights::default());
        let Join::Lead(leader) = flights.join(&key("a")) else {
            panic!("first caller leads")
        };
        let Join::Follow(follower) = flights.join(&key("a")) else {
            panic!("second caller follows")
        };
        let waiting = tokio::spawn(follower.wait());
        leader.publish(Ok((Arc::new(7u32), Arc::new([]))));
        let outcome = waiting.await.unwrap().expect("an outcome");
        assert_eq!(outcome.unwrap().0.downcast_ref::<u32>(), Some(&7));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers_and_the_key() {
        let flights = Arc::new(Flights::default());
        let Join::Lead(leader) = flights.join(&key("a")) else {
            panic!("first caller leads")
        };
        let Join::Follow(follower) = flights.join(&key("a")) else {
            panic!("second caller follows")
        };
        drop(leader);
        assert!(follower.wait().await.is_none());
        assert_eq!(flights.len(), 0);
        assert!(flights.try_lead(&key("a")).is_some());
    }
}
