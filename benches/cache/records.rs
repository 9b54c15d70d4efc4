//! The value every cache group uses: a list of 10 typical records.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) role: String,
    pub(crate) active: bool,
    pub(crate) score: f64,
    pub(crate) created_at: String,
    pub(crate) bio: String,
}

/// Ten records of about 140 bytes each in MessagePack.
pub(crate) fn records() -> Vec<Record> {
    (0..10)
        .map(|id| Record {
            id: 1_000 + id,
            name: format!("User Number {id}"),
            email: format!("user.number.{id}@example.com"),
            role: if id % 3 == 0 { "admin" } else { "member" }.to_owned(),
            active: id % 2 == 0,
            score: id as f64 * 1.5,
            created_at: format!("2024-01-{:02}T12:00:00Z", id + 1),
            bio: format!("Writes about caching, queues and databases; account {id}."),
        })
        .collect()
}
