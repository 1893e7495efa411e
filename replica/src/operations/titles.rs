//! Generated titles as a chat operation (ARCHITECTURE.md §17): written only while
//! the chat has no title, so a title its user set always wins.

use chatd_shared::{
    db::{DbError, chats},
    ids::ChatId,
};

use super::{Change, ChatOps};

/// What [`ChatOps::set_generated_title`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TitleOutcome {
    /// The title was stored.
    Set,
    /// The chat has a title already (its user's, or one generated before)
    /// or is gone: nothing changed.
    Kept,
}

impl ChatOps {
    /// Stores `title` as chat `id`'s title unless it has one (the check is
    /// in the statement, so a user's title wins even when it races this).
    /// Announces the title on the chat's and its owner's streams.
    pub async fn set_generated_title(
        &self,
        id: ChatId,
        title: &str,
    ) -> Result<TitleOutcome, DbError> {
        let owner = {
            let client = self.pool.get().await?;
            chats::set_generated_title(&client, id, title).await?
        };
        Ok(match owner {
            Some(owner_id) => {
                self.announce([Change::Title {
                    chat_id: id,
                    owner_id,
                }]);
                TitleOutcome::Set
            }
            None => TitleOutcome::Kept,
        })
    }
}
