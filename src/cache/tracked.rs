//! The tag epochs a [`RedisBackend`](super::RedisBackend) has seen, kept current by the
//! invalidation channel, so that a read validates its entry's tags without a script.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::SeqCst},
    },
    time::Duration,
};

use quick_cache::sync::Cache as QuickCache;

use super::{
    backend::{Epoch, now_ms},
    redis::Message,
    subscription::Listener,
};

/// Tag epochs read from Redis, each with the time it was read.
///
/// Bounded by count (quick_cache evicts) and by age: an epoch older than the table's
/// `max_age` is read again, the safety net should a message be lost without the
/// subscription noticing. A tag that is not in the table is simply read from Redis, so
/// eviction costs a round trip, never a stale hit.
pub(super) struct TrackedEpochs {
    /// The backend's id: its own invalidations are applied before they are published.
    instance: u128,
    epochs: QuickCache<Arc<str>, (Epoch, u64)>,
    max_age_ms: u64,
    /// Bumped by every change the table learns of, so a read that fetched epochs while a
    /// change arrived does not keep what it fetched.
    generation: AtomicU64,
}

impl TrackedEpochs {
    pub(super) fn new(instance: u128, max_tags: usize, max_age: Duration) -> Self {
        Self {
            instance,
            epochs: QuickCache::new(max_tags.max(1)),
            max_age_ms: u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
            generation: AtomicU64::new(0),
        }
    }

    /// The epoch of the tag stored as `tag`, if it is known and young enough.
    #[inline]
    pub(super) fn get(&self, tag: &str, now: u64) -> Option<Epoch> {
        let (epoch, read_at) = self.epochs.get(tag)?;
        (now.saturating_sub(read_at) < self.max_age_ms).then_some(epoch)
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(SeqCst)
    }

    /// Keeps `epoch`, read from Redis after the table was at `generation`; a change that
    /// arrived meanwhile undoes the insert (the change's own removal may run before or
    /// after it, so the check follows the insert).
    pub(super) fn insert(&self, tag: &Arc<str>, epoch: Epoch, generation: u64) {
        self.epochs.insert(Arc::clone(tag), (epoch, now_ms()));
        if self.generation.load(SeqCst) != generation {
            self.epochs.remove(&**tag);
        }
    }

    /// Forgets the epochs of `tags`, which changed.
    pub(super) fn forget<'a>(&self, tags: impl IntoIterator<Item = &'a str>) {
        self.generation.fetch_add(1, SeqCst);
        for tag in tags {
            self.epochs.remove(tag);
        }
    }

    fn clear(&self) {
        self.generation.fetch_add(1, SeqCst);
        self.epochs.clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.epochs.len()
    }
}

impl Listener for TrackedEpochs {
    async fn apply(&self, payload: &[u8]) {
        match Message::decode(payload) {
            Some((sender, _)) if sender == self.instance => {}
            Some((_, Message::Tags(tags))) => self.forget(tags.iter().map(String::as_str)),
            // Writes and deletions of entries leave epochs as they are.
            Some((_, Message::Key(_) | Message::Prefix(_))) => {}
            // Something else publishes on the channel: forget everything rather than guess.
            None => self.clear(),
        }
    }

    async fn resync(&self) {
        self.clear();
    }

    fn lost(&self) {
        self.generation.fetch_add(1, SeqCst);
    }
}

impl std::fmt::Debug for TrackedEpochs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedEpochs")
            .field("tags", &self.epochs.len())
            .field("max_age_ms", &self.max_age_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_overlapping_a_change_is_undone() {
        let table = TrackedEpochs::new(1, 100, Duration::from_secs(60));
        let tag: Arc<str> = "{app}:t:user".into();
        let before = table.generation();
        table.forget(["{app}:t:other"]);
        table.insert(&tag, Epoch::from_u128(7), before);
        assert_eq!(table.get(&tag, now_ms()), None);

        let before = table.generation();
        table.insert(&tag, Epoch::from_u128(7), before);
        assert_eq!(table.get(&tag, now_ms()), Some(Epoch::from_u128(7)));
    }

    #[test]
    fn old_epochs_are_read_again() {
        let table = TrackedEpochs::new(1, 100, Duration::from_secs(60));
        let tag: Arc<str> = "{app}:t:user".into();
        table.insert(&tag, Epoch::from_u128(7), table.generation());
        assert!(table.get(&tag, now_ms() + 59_000).is_some());
        assert_eq!(table.get(&tag, now_ms() + 61_000), None);
    }

    #[tokio::test]
    async fn messages_from_others_forget_their_tags_and_unknown_bytes_forget_all() {
        let table = TrackedEpochs::new(1, 100, Duration::from_secs(60));
        let user: Arc<str> = "{app}:t:user".into();
        let post: Arc<str> = "{app}:t:post".into();
        table.insert(&user, Epoch::from_u128(7), table.generation());
        table.insert(&post, Epoch::from_u128(8), table.generation());

        let tags = [super::super::backend::Tag::from_arc(Arc::clone(&user))];
        for (_, message) in Message::tags(1, &tags) {
            table.apply(&message).await;
        }
        assert!(
            table.get(&user, now_ms()).is_some(),
            "its own message is skipped"
        );
        for (_, message) in Message::tags(2, &tags) {
            table.apply(&message).await;
        }
        assert_eq!(table.get(&user, now_ms()), None);
        assert!(table.get(&post, now_ms()).is_some());

        table.apply(b"not a message").await;
        assert_eq!(table.len(), 0);
    }
}
