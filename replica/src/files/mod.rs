//! Attachments (ARCHITECTURE.md §17): uploads whose type is sniffed from their
//! bytes, downloads a chunk at a time, the check that a message's `file`
//! parts name its owner's files, and the loading of attachments into a
//! model prompt.
//!
//! - [`Files`]: what the API calls (upload, read), owner-only.
//! - [`store`]: the [`FileStore`] trait, where bytes live; PostgreSQL now.
//! - [`sniff`]: deciding the type from the content.
//! - [`attach_to_prompt`]: the turn loop's side.

pub mod sniff;
pub mod store;

use std::{collections::HashSet, sync::Arc};

use base64::Engine;
use bytes::Bytes;
use chatd_shared::{
    db::files::{FileRow, NewFile},
    ids::FileId,
    parts::Part,
    status::MessageRole,
};
use sha2::{Digest, Sha256};

pub use self::store::{ChunkStream, FileStore, PgFileStore, StoreError};
use crate::{
    llm::{FileContent, Prompt, PromptFile},
    operations::Access,
};

/// The largest upload by default (`CHATD_MAX_FILE_SIZE`).
pub const DEFAULT_MAX_SIZE: usize = 25 * 1024 * 1024;

/// Longest file name kept (characters).
const MAX_NAME: usize = 255;

/// An upload, as the API read it.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// The client's file name, if it gave one.
    pub name: Option<&'a str>,
    /// The client's `Content-Type`, a hint only (Markdown among text).
    pub declared_type: Option<&'a str>,
    /// The bytes (at most the limit: the API refused larger bodies).
    pub content: Bytes,
}

/// What [`Files::upload`] did.
#[derive(Debug, Clone)]
pub enum UploadOutcome {
    /// Stored.
    Stored(FileRow),
    /// The content is empty.
    Empty,
    /// The content is not an allowed kind (see [`sniff`]).
    Unsupported,
}

/// Uploads and downloads of the caller's own files. Cheap to clone.
#[derive(Clone)]
pub struct Files {
    store: Arc<dyn FileStore>,
    max_size: usize,
}

impl Files {
    /// Files in `store`, uploads of at most `max_size` bytes.
    pub fn new(store: Arc<dyn FileStore>, max_size: usize) -> Self {
        Self { store, max_size }
    }

    /// The largest upload accepted, in bytes.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// The store (the turn loop reads attachments from it).
    pub fn store(&self) -> &Arc<dyn FileStore> {
        &self.store
    }

    /// Stores an upload as the caller's file, typed by its content.
    pub async fn upload(
        &self,
        access: Access,
        upload: Upload<'_>,
    ) -> Result<UploadOutcome, StoreError> {
        if upload.content.is_empty() {
            return Ok(UploadOutcome::Empty);
        }
        let given = upload.name.map(clean_name).unwrap_or_default();
        let Some(media_type) = sniff::sniff(&upload.content, &given, upload.declared_type) else {
            return Ok(UploadOutcome::Unsupported);
        };
        let name = if given.is_empty() {
            format!("file.{}", sniff::extension(media_type))
        } else {
            given
        };
        let sha256 = Sha256::digest(&upload.content);
        let file = NewFile {
            id: FileId::new_random(),
            owner_id: access.user_id,
            name: &name,
            media_type,
            size: upload.content.len() as i64,
            sha256: &sha256,
        };
        Ok(UploadOutcome::Stored(
            self.store.put(&file, &upload.content).await?,
        ))
    }

    /// File `id` if it is the caller's. Files are owner-only, for admins
    /// too: they see other users' chats, not their uploads.
    pub async fn get(&self, access: Access, id: FileId) -> Result<Option<FileRow>, StoreError> {
        self.store.get(id, Some(access.user_id)).await
    }

    /// The bytes of `file` (from [`Self::get`]), a chunk at a time.
    pub fn read(&self, file: &FileRow) -> ChunkStream {
        self.store.read(file)
    }
}

/// A client's file name made safe to store and to send back in
/// `Content-Disposition`: the last path component, without control
/// characters, trimmed, at most 255 characters ("" when nothing is left).
pub fn clean_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    cleaned.trim().to_owned()
}

/// Loads into `prompt.files` the attachments its user messages refer to
/// that it does not hold yet, in one read; nothing (no statement) when
/// there are none. A file that is gone stays out, and the wire format sends
/// a note in its place.
pub async fn attach_to_prompt(
    store: &dyn FileStore,
    prompt: &mut Prompt,
) -> Result<(), StoreError> {
    let wanted: HashSet<FileId> = prompt
        .messages
        .iter()
        .filter(|message| message.role == MessageRole::User)
        .flat_map(|message| &message.content)
        .filter_map(|part| match part {
            Part::File { file_id, .. } if !prompt.files.contains_key(file_id) => {
                file_id.parse().ok()
            }
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let wanted: Vec<FileId> = wanted.into_iter().collect();
    for (row, content) in store.contents(&wanted).await? {
        let content = if row.media_type.starts_with("image/") || row.media_type == "application/pdf"
        {
            FileContent::Base64(
                base64::engine::general_purpose::STANDARD
                    .encode(&content)
                    .into(),
            )
        } else {
            FileContent::Text(String::from_utf8_lossy(&content).into())
        };
        prompt.files.insert(
            row.id.to_string(),
            PromptFile {
                name: row.name,
                media_type: row.media_type,
                content,
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_path_and_control_characters() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("C:\\Users\\me\\cat.png"), "cat.png");
        assert_eq!(clean_name(" a\r\nb.txt "), "ab.txt");
        assert_eq!(clean_name("dir/"), "");
        assert_eq!(clean_name(&"x".repeat(300)).len(), 255);
    }
}
