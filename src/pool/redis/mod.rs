//! Redis: one multiplexed connection ([`RedisHandle`]) and a bb8 pool of connections
//! ([`RedisPool`]), both built by [`RedisPoolBuilder`].
//!
//! The handle is the default: it pipelines every command of every task over one connection
//! and reconnects by itself. The pool is for what that connection cannot do, commands that
//! hold a connection to themselves: blocking pops, `WATCH`/`MULTI` transactions.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> perfkit::pool::Result<()> {
//! use perfkit::pool::RedisPoolBuilder;
//! use redis::AsyncCommands;
//!
//! let builder = RedisPoolBuilder::from_env()?;
//! let handle = builder.clone().build().await?;
//! let pool = builder.build_pool().await?;
//!
//! let mut conn = handle.connection();
//! let () = conn.set("greeting", "hello").await?;
//!
//! let mut worker = pool.get().await?;
//! let job: Option<(String, String)> = worker.blpop("jobs", 1.0).await?;
//! # let _ = job;
//! # Ok(())
//! # }
//! ```

mod builder;
mod connection;
mod handle;
mod lifetime;
mod pool;

pub use self::{
    builder::RedisPoolBuilder,
    connection::{RedisConnection, RedisManager},
    handle::{RedisHandle, SharedConnection},
    pool::{PooledRedisConnection, RedisPool},
};
