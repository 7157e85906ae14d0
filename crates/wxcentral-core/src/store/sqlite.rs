//! The embedded default store: one SQLite file in WAL mode.

use crate::error::Result;
use std::path::Path;

/// Placeholder: the implementation lands with the engine.
#[derive(Debug)]
pub struct SqliteStore;

impl SqliteStore {
    pub async fn open(_path: &Path) -> Result<Self> {
        Ok(Self)
    }
}
