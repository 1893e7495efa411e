//! `files` and `file_chunks`: uploaded attachments (ARCHITECTURE.md §17). A file's
//! facts are one row; its bytes are rows of `file_chunks`, written and read
//! one chunk per statement so no statement carries a whole large file.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::ids::{FileId, UserId};

/// A row of `files` (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// Its id.
    pub id: FileId,
    /// Who uploaded it; only they may read or reference it.
    pub owner_id: UserId,
    /// Its display name.
    pub name: String,
    /// The type chatd sniffed from the content.
    pub media_type: String,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the content (32 bytes); its hex is the ETag.
    pub sha256: Vec<u8>,
    /// When it was uploaded.
    pub created_at: DateTime<Utc>,
}

impl FileRow {
    fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            owner_id: row.try_get("owner_id")?,
            name: row.try_get("name")?,
            media_type: row.try_get("media_type")?,
            size: row.try_get("size")?,
            sha256: row.try_get("sha256")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// The SHA-256 as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// The columns of [`FileRow`], for `SELECT` and `RETURNING`.
pub const COLUMNS: &str = "id, owner_id, name, media_type, size, sha256, created_at";

/// What [`insert`] stores.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    /// Its id.
    pub id: FileId,
    /// The uploader.
    pub owner_id: UserId,
    /// Display name (1–255 characters).
    pub name: &'a str,
    /// Sniffed media type.
    pub media_type: &'a str,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the content.
    pub sha256: &'a [u8],
}

static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO files (id, owner_id, name, media_type, size, sha256)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    )
});

/// Stores a file's row (its chunks follow with [`insert_chunk`], in the
/// same transaction).
pub async fn insert(db: &impl GenericClient, file: &NewFile<'_>) -> DbResult<FileRow> {
    let stmt = db.prepare_cached(&INSERT).await?;
    let row = db
        .query_one(
            &stmt,
            &[
                &file.id,
                &file.owner_id,
                &file.name,
                &file.media_type,
                &file.size,
                &file.sha256,
            ],
        )
        .await?;
    FileRow::from_row(&row)
}

/// Stores chunk `seq` (0, 1, …) of file `id`.
pub async fn insert_chunk(
    db: &impl GenericClient,
    id: FileId,
    seq: i32,
    data: &[u8],
) -> DbResult<()> {
    let stmt = db
        .prepare_cached("INSERT INTO file_chunks (file_id, seq, data) VALUES ($1, $2, $3)")
        .await?;
    db.execute(&stmt, &[&id, &seq, &data]).await?;
    Ok(())
}

static GET: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM files WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2)")
});

/// File `id`, if it exists and (when `only_owner` is given) is theirs.
pub async fn get(
    db: &impl GenericClient,
    id: FileId,
    only_owner: Option<UserId>,
) -> DbResult<Option<FileRow>> {
    let stmt = db.prepare_cached(&GET).await?;
    db.query_opt(&stmt, &[&id, &only_owner])
        .await?
        .map(|row| FileRow::from_row(&row))
        .transpose()
}

/// Chunk `seq` of file `id` (`None` past the last one).
pub async fn chunk(db: &impl GenericClient, id: FileId, seq: i32) -> DbResult<Option<Vec<u8>>> {
    let stmt = db
        .prepare_cached("SELECT data FROM file_chunks WHERE file_id = $1 AND seq = $2")
        .await?;
    Ok(db
        .query_opt(&stmt, &[&id, &seq])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?)
}

static OWNED: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM files WHERE id = ANY($1) AND owner_id = $2"));

/// Those of files `ids` that `owner` owns (a message may reference only
/// its sender's files).
pub async fn owned(
    db: &impl GenericClient,
    owner: UserId,
    ids: &[FileId],
) -> DbResult<Vec<FileRow>> {
    let stmt = db.prepare_cached(&OWNED).await?;
    db.query(&stmt, &[&ids, &owner])
        .await?
        .iter()
        .map(FileRow::from_row)
        .collect()
}

static CONTENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS},
                (SELECT string_agg(c.data, ''::bytea ORDER BY c.seq) FROM file_chunks c
                 WHERE c.file_id = f.id) AS content
         FROM files f WHERE id = ANY($1)"
    )
});

/// Files `ids` with their whole content, in one statement (a model prompt
/// needs every attachment at once). Missing ids are left out.
pub async fn contents(
    db: &impl GenericClient,
    ids: &[FileId],
) -> DbResult<Vec<(FileRow, Vec<u8>)>> {
    let stmt = db.prepare_cached(&CONTENTS).await?;
    db.query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|row| {
            let content: Option<Vec<u8>> = row.try_get("content")?;
            Ok((FileRow::from_row(row)?, content.unwrap_or_default()))
        })
        .collect()
}
