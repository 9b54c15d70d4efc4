//! How a [`RouteTimeout`] layer reaches the enclosing timeout.
//!
//! While a timeout future polls its inner future it opens a scope on the current thread;
//! a [`RouteTimeout`] future polled inside (necessarily on the same thread, within that
//! poll) records its override in the innermost open scope, and the timeout future reads it
//! when the poll returns. Scopes nest and restore the outer one on exit, also when the inner
//! future panics.

use std::cell::Cell;

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

/// An open scope; closing it (by [`Scope::exit`] or by unwinding) restores the outer one.
pub(super) struct Scope {
    outer: Slot,
}

impl Scope {
    #[inline]
    pub(super) fn enter() -> Self {
        let outer = SLOT
            .try_with(|slot| slot.replace(Slot::Open))
            .unwrap_or(Slot::Closed);
        Self { outer }
    }

    /// Closes the scope, returning the override recorded inside it, if any.
    #[inline]
    pub(super) fn exit(self) -> Option<RouteTimeout> {
        let recorded = SLOT.try_with(Cell::get).unwrap_or(Slot::Closed);
        drop(self);
        match recorded {
            Slot::Set(route) => Some(route),
            Slot::Open | Slot::Closed => None,
        }
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        let _ = SLOT.try_with(|slot| slot.set(self.outer));
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
