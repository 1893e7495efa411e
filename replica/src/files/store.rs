//! Where file bytes live: the [`FileStore`] trait and its PostgreSQL
//! implementation. File rows (owner, name, type, size, hash) are always in
//! PostgreSQL; a store decides where the bytes go. An S3-compatible store
//! would upload the bytes under the file's id, then insert the row, and
//! stream them back from a ranged GET: nothing that calls the trait changes.

use std::sync::Arc;

use bytes::Bytes;
use chatd_shared::{
    db::{
        DbError, Pool,
        files::{self, FileRow, NewFile},
    },
    ids::{FileId, UserId},
};
use futures::{StreamExt, stream::BoxStream};

/// Why a store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A file's bytes, chunk by chunk, in order.
pub type ChunkStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Stores and reads files. Cheap to share (`Arc<dyn FileStore>`).
#[async_trait::async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Stores `content` as `file`, all or nothing: a failure leaves neither
    /// the row nor any byte behind.
    async fn put(&self, file: &NewFile<'_>, content: &Bytes) -> Result<FileRow, StoreError>;

    /// File `id`, if it exists and (with `only_owner`) is theirs.
    async fn get(
        &self,
        id: FileId,
        only_owner: Option<UserId>,
    ) -> Result<Option<FileRow>, StoreError>;

    /// The bytes of `file`, a chunk at a time: nothing holds the whole file.
    fn read(&self, file: &FileRow) -> ChunkStream;

    /// The whole content of each of `ids` that exists (a model prompt needs
    /// every attachment of the conversation at once).
    async fn contents(&self, ids: &[FileId]) -> Result<Vec<(FileRow, Bytes)>, StoreError>;
}

/// Bytes in PostgreSQL: `file_chunks` rows of at most `chunk_size` bytes.
/// An upload is one transaction (the row, then each chunk in its own
/// statement); a download reads one chunk per statement, taking a pooled
/// connection only for that statement, so a slow client never holds one.
pub struct PgFileStore {
    pool: Pool,
    chunk_size: usize,
}

impl PgFileStore {
    /// Chunks of 1 MiB: small enough for one statement's buffers, large
    /// enough that a 25 MiB file is 25 statements.
    pub const CHUNK_SIZE: usize = 1024 * 1024;

    /// A store on `pool`'s database.
    pub fn new(pool: Pool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            chunk_size: Self::CHUNK_SIZE,
        })
    }
}

#[async_trait::async_trait]
impl FileStore for PgFileStore {
    async fn put(&self, file: &NewFile<'_>, content: &Bytes) -> Result<FileRow, StoreError> {
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        let row = files::insert(&tx, file).await?;
        for (seq, chunk) in content.chunks(self.chunk_size).enumerate() {
            let seq = i32::try_from(seq).unwrap_or(i32::MAX);
            files::insert_chunk(&tx, file.id, seq, chunk).await?;
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(row)
    }

    async fn get(
        &self,
        id: FileId,
        only_owner: Option<UserId>,
    ) -> Result<Option<FileRow>, StoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        Ok(files::get(&client, id, only_owner).await?)
    }

    fn read(&self, file: &FileRow) -> ChunkStream {
        let pool = self.pool.clone();
        let id = file.id;
        futures::stream::unfold(Some(0i32), move |seq| {
            let pool = pool.clone();
            async move {
                let seq = seq?;
                let chunk = async {
                    let client = pool.get().await.map_err(DbError::from)?;
                    files::chunk(&client, id, seq).await
                }
                .await;
                match chunk {
                    Ok(Some(data)) => Some((Ok(Bytes::from(data)), Some(seq + 1))),
                    Ok(None) => None,
                    Err(error) => Some((Err(StoreError::from(error)), None)),
                }
            }
        })
        .boxed()
    }

    async fn contents(&self, ids: &[FileId]) -> Result<Vec<(FileRow, Bytes)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await.map_err(DbError::from)?;
        Ok(files::contents(&client, ids)
            .await?
            .into_iter()
            .map(|(row, content)| (row, Bytes::from(content)))
            .collect())
    }
}
