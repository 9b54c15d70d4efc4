//! Capturing what the crate logs, for tests that check it.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use tracing::{Level, Subscriber, field::Field};
use tracing_subscriber::{Layer, layer::SubscriberExt};

/// One event a [`Capture`] saw.
#[derive(Clone, Debug)]
pub struct Captured {
    pub level: Level,
    pub target: String,
    /// The message, then `name=value` for every other field.
    pub text: String,
}

/// A tracing layer that keeps every event, for tests that check what is logged.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    /// Captures the events of this thread until the guard is dropped. Use with a
    /// current-thread runtime, so that spawned tasks log on this thread too.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Self::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        (capture, tracing::subscriber::set_default(subscriber))
    }

    pub fn events(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }

    pub fn warnings_containing(&self, needle: &str) -> Vec<Captured> {
        self.events()
            .into_iter()
            .filter(|event| event.level == Level::WARN && event.text.contains(needle))
            .collect()
    }
}

struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?} ");
        } else {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value} ");
        } else {
            let _ = write!(self.0, "{}={value} ", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            text: text.0,
        });
    }
}
