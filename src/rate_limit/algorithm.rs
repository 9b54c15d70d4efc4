/// How a [`Policy`](super::Policy)'s quotas are spent. Every store decides each algorithm the
/// same way, to the microsecond.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// The generic cell rate algorithm (the default): one timestamp per key and quota. A
    /// quota of `count` per `period` with a burst `b` admits `b` requests at once, then one
    /// every `period / count`; nothing resets all at once, so there is no edge of a window
    /// at which twice the quota gets through.
    #[default]
    Gcra,
    /// The sliding-window counter: the count of the current fixed window plus the previous
    /// window's count weighted by how much of it the sliding window still covers. Two
    /// counters per key and quota; admits `count` per any window of `period`, approximately.
    SlidingWindow,
    /// Fixed windows aligned on multiples of the period: `count` requests per window, the
    /// budget restored all at once when the window ends.
    FixedWindow,
}

impl Algorithm {
    /// A one-byte tag naming the algorithm in store keys.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Self::Gcra => b'g',
            Self::SlidingWindow => b's',
            Self::FixedWindow => b'f',
        }
    }
}
