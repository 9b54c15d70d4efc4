//! How a [`RouteTimeout`] layer reaches the enclosing timeout.
//!
//! While a timeout future polls its inner future it opens a scope on the current thread;
//! a [`RouteTimeout`] future polled inside (necessarily on the same thread, within that
//! poll) records its override in the innermost open scope, and the timeout future reads it
//! when the poll returns. Scopes nest and restore the outer one on exit, also when the inner
//! future panics.

use std::{
    cell::Cell,
    sync::atomic::{AtomicBool, Ordering},
};

use super::RouteTimeout;

#[derive(Clone, Copy)]
enum Slot {
    Closed,
    Open,
    Set(RouteTimeout),
}

thread_local! {
    static SLOT: Cell<Slot> = const { Cell::new(Slot::Closed) };
}

/// Set once any [`RouteTimeout`] layer exists in the process; until then timeout futures
/// skip the scope entirely and pay one relaxed load per poll.
static ROUTE_LAYERS: AtomicBool = AtomicBool::new(false);

/// Notes that a [`RouteTimeout`] layer exists, so timeout futures open scopes from now on.
pub(super) fn enable() {
    ROUTE_LAYERS.store(true, Ordering::Relaxed);
}

/// An open scope; closing it (by [`Scope::exit`] or by unwinding) restores the outer one.
pub(super) struct Scope {
    outer: Option<Slot>,
}

impl Scope {
    #[inline]
    pub(super) fn enter() -> Self {
        if !ROUTE_LAYERS.load(Ordering::Relaxed) {
            return Self { outer: None };
        }
        let outer = SLOT.try_with(|slot| slot.replace(Slot::Open)).ok();
        Self { outer }
    }

    /// Closes the scope, returning the override recorded inside it, if any.
    #[inline]
    pub(super) fn exit(mut self) -> Option<RouteTimeout> {
        let outer = self.outer.take()?;
        match SLOT.try_with(|slot| slot.replace(outer)) {
            Ok(Slot::Set(route)) => Some(route),
            _ => None,
        }
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        if let Some(outer) = self.outer {
            let _ = SLOT.try_with(|slot| slot.set(outer));
        }
    }
}

/// Records `route` in the innermost open scope; does nothing outside any scope.
#[inline]
pub(super) fn record(route: RouteTimeout) {
    let _ = SLOT.try_with(|slot| {
        if !matches!(slot.get(), Slot::Closed) {
            slot.set(Slot::Set(route));
        }
    });
}
