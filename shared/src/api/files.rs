//! `File`: an uploaded attachment as clients see it (ARCHITECTURE.md §17).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{db, ids::FileId};

/// An uploaded file. Reference it from a user message with a part
/// `{"type": "file", "file_id": id, "media_type": media_type}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct File {
    /// Its id.
    pub id: FileId,
    /// Its name (the uploaded name without any path, or `file.<ext>`).
    pub name: String,
    /// The type chatd found in its content (never the client's claim).
    pub media_type: String,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the content, lowercase hex (also its `ETag`).
    pub sha256: String,
    /// When it was uploaded.
    pub created_at: DateTime<Utc>,
}

impl From<&db::files::FileRow> for File {
    fn from(row: &db::files::FileRow) -> Self {
        Self {
            id: row.id,
            name: row.name.clone(),
            media_type: row.media_type.clone(),
            size: row.size,
            sha256: row.sha256_hex(),
            created_at: row.created_at,
        }
    }
}
