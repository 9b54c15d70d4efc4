//! Redis: a multiplexed connection and a bb8 pool.
