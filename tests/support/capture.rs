//! Capturing what the crate logs, for tests that check it.
//!
//! One helper for every suite: integration tests reach it as `support::capture`, unit tests
//! as `crate::capture` (`src/lib.rs` includes this file under `cfg(test)`).

#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use tracing::{
    Level, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{Layer, layer::SubscriberExt};

/// One event a [`Capture`] saw.
#[derive(Clone, Debug)]
pub struct Captured {
    pub level: Level,
    pub target: String,
    /// Every field by name, the message under `"message"`.
    pub fields: BTreeMap<&'static str, Value>,
    /// The message, then `name=value` for every other field.
    pub text: String,
}

impl Captured {
    /// The event's message.
    pub fn message(&self) -> &str {
        match self.fields.get("message") {
            Some(Value::Str(message)) => message,
            _ => "",
        }
    }
}

/// A field's value, typed as the event recorded it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    /// A `&str`, a `Display` (`%`) or a `Debug` (`?`) value, as text.
    Str(String),
}

impl Value {
    /// The value as text, for assertions on `%` and `?` fields.
    pub fn text(&self) -> String {
        match self {
            Self::U64(value) => value.to_string(),
            Self::I64(value) => value.to_string(),
            Self::F64(value) => value.to_string(),
            Self::Bool(value) => value.to_string(),
            Self::Str(value) => value.clone(),
        }
    }
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

    /// Every event so far.
    pub fn events(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }

    /// Every event since the last `take`, removing them.
    pub fn take(&self) -> Vec<Captured> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// The warnings whose text contains `needle`.
    pub fn warnings_containing(&self, needle: &str) -> Vec<Captured> {
        self.events()
            .into_iter()
            .filter(|event| event.level == Level::WARN && event.text.contains(needle))
            .collect()
    }
}

struct Recorder<'a> {
    fields: &'a mut BTreeMap<&'static str, Value>,
    text: &'a mut String,
}

impl Recorder<'_> {
    fn record(&mut self, field: &Field, value: Value) {
        let shown = value.text();
        if field.name() == "message" {
            let _ = write!(self.text, "{shown} ");
        } else {
            let _ = write!(self.text, "{}={shown} ", field.name());
        }
        self.fields.insert(field.name(), value);
    }
}

impl Visit for Recorder<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, Value::U64(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, Value::I64(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, Value::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, Value::Str(value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, Value::Str(format!("{value:?}")));
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        let mut text = String::new();
        event.record(&mut Recorder {
            fields: &mut fields,
            text: &mut text,
        });
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields,
            text,
        });
    }
}
