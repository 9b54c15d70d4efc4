use std::{fmt, sync::Arc};

use tower_layer::Layer;

use super::{
    Compression, CompressionStats, DefaultPredicate, Encoding, Predicate, encoding::Offer,
};
use crate::EnvError;

/// The default minimum body size, in bytes: smaller bodies are sent as they are
/// (`COMPRESSION_MIN_SIZE`).
pub const DEFAULT_MIN_SIZE: u64 = 1024;

/// The default largest body compressed in memory, in bytes: a body of known length up to
/// this size is compressed whole and sent with its exact `Content-Length`; larger and
/// unknown-length bodies are compressed as a stream.
pub const DEFAULT_IN_MEMORY_LIMIT: u64 = 512 * 1024;

/// The default brotli quality: 5 (0–11), the lowest at which brotli's output is smaller
/// than gzip 6's on JSON. See the [module docs](super#levels) for the measurements.
pub const DEFAULT_BROTLI_QUALITY: u32 = 5;

/// The default gzip and deflate level: 6 (0–9), zlib's own default (`COMPRESSION_LEVEL`).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// What becomes of a strong `ETag` on a compressed response.
///
/// A strong validator promises byte-identical bodies, which a compressed body is not; the
/// default makes it weak (`W/"v1"`), which caches compare as equal to the identity one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ETagMode {
    /// `"v1"` becomes `W/"v1"`.
    #[default]
    Weaken,
    /// `"v1"` becomes `"v1-br"` (or `-gzip`, `-deflate`): strong, one per coding.
    Suffix,
    /// The `ETag` is removed.
    Drop,
    /// The `ETag` is left as it is.
    Keep,
}

/// What the layer does with event streams (`text/event-stream`, `application/x-ndjson`,
/// `multipart/x-mixed-replace`), whose clients read each frame as it arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventStreams {
    /// Compress them, flushing after every frame so that no frame is held back.
    #[default]
    FlushEachFrame,
    /// Send them uncompressed.
    Skip,
}

/// A quality that can depend on the body's size.
///
/// `Level::new(6)` is one level for every body; [`Level::up_to`] adds a level for bodies
/// of known length up to a size, so small responses can afford a higher quality than
/// large or streamed ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    default: u32,
    /// `(largest size, level)`, ascending by size.
    tiers: Vec<(u64, u32)>,
}

impl Level {
    /// One level for every body.
    pub fn new(level: u32) -> Self {
        Self {
            default: level,
            tiers: Vec::new(),
        }
    }

    /// Uses `level` for bodies of known length up to `size` bytes (the smallest matching
    /// tier wins).
    #[must_use]
    pub fn up_to(mut self, size: u64, level: u32) -> Self {
        self.tiers.retain(|(tier, _)| *tier != size);
        self.tiers.push((size, level));
        self.tiers.sort_unstable();
        self
    }

    /// The level for a body of `size` bytes.
    pub fn for_size(&self, size: Option<u64>) -> u32 {
        size.and_then(|size| self.tiers.iter().find(|(tier, _)| size <= *tier))
            .map_or(self.default, |(_, level)| *level)
    }
}

impl From<u32> for Level {
    fn from(level: u32) -> Self {
        Self::new(level)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) offer: Offer,
    /// Per [`Encoding::index`].
    pub(crate) levels: [Level; 3],
    pub(crate) min_size: u64,
    pub(crate) in_memory_limit: u64,
    pub(crate) etag: ETagMode,
    pub(crate) event_streams: EventStreams,
    pub(crate) not_acceptable: bool,
    pub(crate) stats: CompressionStats,
}

/// Compresses response bodies for clients that accept it; see the [module docs](super).
///
/// The layer is configuration: cloning it is cheap, and services built from one layer and
/// its clones share one [`CompressionStats`].
#[derive(Clone)]
pub struct CompressionLayer<P = DefaultPredicate> {
    pub(crate) config: Arc<Config>,
    pub(crate) predicate: P,
}

impl Default for CompressionLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CompressionLayer {
    /// A layer offering brotli, gzip and deflate (those this build has), in that order,
    /// with the defaults above.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                offer: Offer::new(Encoding::ALL),
                levels: [
                    Level::new(DEFAULT_BROTLI_QUALITY),
                    Level::new(DEFAULT_GZIP_LEVEL),
                    Level::new(DEFAULT_GZIP_LEVEL),
                ],
                min_size: DEFAULT_MIN_SIZE,
                in_memory_limit: DEFAULT_IN_MEMORY_LIMIT,
                etag: ETagMode::default(),
                event_streams: EventStreams::default(),
                not_acceptable: false,
                stats: CompressionStats::new(),
            }),
            predicate: DefaultPredicate::new(),
        }
    }

    /// A layer configured from the environment, with the defaults for what is unset:
    ///
    /// | variable | meaning | default |
    /// | --- | --- | --- |
    /// | `COMPRESSION_MIN_SIZE` | [`min_size`](Self::min_size), bytes | [`DEFAULT_MIN_SIZE`] |
    /// | `COMPRESSION_LEVEL` | gzip and deflate level, 0–9 | [`DEFAULT_GZIP_LEVEL`] |
    /// | `USE_BROTLI` | `true` or `false`: offer brotli | `true` |
    ///
    /// # Errors
    ///
    /// A variable that is set but does not parse, or a level above 9.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        use crate::env::parse;
        let mut layer = Self::new();
        let name = "COMPRESSION_MIN_SIZE";
        if let Some(min) = parse::<u64>(name, get(name), "a size in bytes")? {
            layer = layer.min_size(min);
        }
        let name = "COMPRESSION_LEVEL";
        if let Some(level) = parse::<GzipLevel>(name, get(name), "a gzip level from 0 to 9")? {
            layer = layer
                .level(Encoding::Gzip, level.0)
                .level(Encoding::Deflate, level.0);
        }
        let name = "USE_BROTLI";
        if let Some(use_brotli) = parse::<bool>(name, get(name), "true or false")? {
            layer = layer.encoding(Encoding::Brotli, use_brotli);
        }
        Ok(layer)
    }

    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, EnvError> {
        Self::from_vars(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }
}

/// A gzip level read from the environment.
struct GzipLevel(u32);

impl std::str::FromStr for GzipLevel {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse() {
            Ok(level @ 0..=9) => Ok(Self(level)),
            Ok(_) => Err("the level must be at most 9"),
            Err(_) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                Err("the level must be at most 9")
            }
            Err(_) => Err("the level must be a whole number"),
        }
    }
}

impl<P> CompressionLayer<P> {
    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The statistics of every service built from this layer and its clones.
    pub fn stats(&self) -> CompressionStats {
        self.config.stats.clone()
    }

    /// Offers `encoding` or stops offering it. A coding this build lacks is never offered.
    #[must_use]
    pub fn encoding(mut self, encoding: Encoding, enabled: bool) -> Self {
        let offer = &mut self.config_mut().offer;
        if enabled {
            offer.add(encoding);
        } else {
            offer.remove(encoding);
        }
        self
    }

    /// Offers these codings, in this order of preference (which settles ties between
    /// equal q-values), and no other. Defaults to brotli, gzip, deflate.
    #[must_use]
    pub fn preference(mut self, order: impl IntoIterator<Item = Encoding>) -> Self {
        self.config_mut().offer = Offer::new(order);
        self
    }

    /// Sets the quality of `encoding`: brotli 0–11 (default 4), gzip and deflate 0–9
    /// (default 6); higher values are clamped. Takes a [`Level`] for size tiers.
    #[must_use]
    pub fn level(mut self, encoding: Encoding, level: impl Into<Level>) -> Self {
        self.config_mut().levels[encoding.index()] = level.into();
        self
    }

    /// Bodies smaller than this are sent uncompressed. A body of unknown length is held
    /// until it has produced this many bytes or ended, then decided. Default
    /// [`DEFAULT_MIN_SIZE`] (1 KiB).
    #[must_use]
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.config_mut().min_size = bytes;
        self
    }

    /// Bodies of known length up to this size are compressed whole, before the response
    /// head is sent, and get their exact `Content-Length`. Default
    /// [`DEFAULT_IN_MEMORY_LIMIT`] (512 KiB); `0` streams every body.
    #[must_use]
    pub fn in_memory_limit(mut self, bytes: u64) -> Self {
        self.config_mut().in_memory_limit = bytes;
        self
    }

    /// What becomes of a strong `ETag` on compressed responses. Default
    /// [`ETagMode::Weaken`].
    #[must_use]
    pub fn etag(mut self, mode: ETagMode) -> Self {
        self.config_mut().etag = mode;
        self
    }

    /// Whether event streams are compressed (flushed frame by frame, the default) or
    /// passed through.
    #[must_use]
    pub fn event_streams(mut self, mode: EventStreams) -> Self {
        self.config_mut().event_streams = mode;
        self
    }

    /// Answers `406 Not Acceptable` when the client excludes identity (`identity;q=0` or
    /// `*;q=0`) and accepts none of the offered codings. Off by default: such requests get
    /// the uncompressed body, which is what most servers do.
    #[must_use]
    pub fn not_acceptable(mut self, refuse: bool) -> Self {
        self.config_mut().not_acceptable = refuse;
        self
    }

    /// Replaces the rule deciding which responses are worth compressing.
    #[must_use]
    pub fn predicate<Q: Predicate>(self, predicate: Q) -> CompressionLayer<Q> {
        CompressionLayer {
            config: self.config,
            predicate,
        }
    }
}

impl<P> fmt::Debug for CompressionLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.config;
        f.debug_struct("CompressionLayer")
            .field("offer", &config.offer.order())
            .field("levels", &config.levels)
            .field("min_size", &config.min_size)
            .field("in_memory_limit", &config.in_memory_limit)
            .field("etag", &config.etag)
            .field("event_streams", &config.event_streams)
            .field("not_acceptable", &config.not_acceptable)
            .field("predicate", &std::any::type_name::<P>())
            .finish()
    }
}

impl<S, P: Clone> Layer<S> for CompressionLayer<P> {
    type Service = Compression<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Compression {
            inner,
            config: self.config.clone(),
            predicate: self.predicate.clone(),
        }
    }
}
