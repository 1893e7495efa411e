//! The relay's frames (ARCHITECTURE.md §7): JSON text messages over one WebSocket per
//! pair of replicas. The subscribing replica ("A") sends `sub`/`unsub`; the
//! replica running the chats ("B") sends `parts`, `end` and `overflow`.

use chatd_shared::{
    ids::{ChatId, Generation, MessageId},
    parts::Part,
};
use serde::{Deserialize, Serialize};

/// The path of the relay endpoint on a replica's relay listener.
pub const RELAY_PATH: &str = "/relay/v1";

/// A → B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToWorker {
    /// Send me the parts of this chat's run `generation` after `after_seq`
    /// (all buffered ones when absent), then every new one.
    Sub {
        /// The chat.
        chat_id: ChatId,
        /// The run.
        generation: Generation,
        /// The last seq already received.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_seq: Option<u64>,
    },
    /// Stop sending this chat.
    Unsub {
        /// The chat.
        chat_id: ChatId,
    },
}

/// One part as relayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayPart {
    /// Its seq within the run.
    pub seq: u64,
    /// The step it belongs to.
    pub step: i32,
    /// The part.
    pub part: Part,
}

/// Why B stopped sending a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The run ended (released, handed back, lost).
    Released,
    /// B does not run this chat (any more, or not yet).
    NotRunning,
    /// B runs a newer generation of the chat.
    GenerationChanged,
}

/// B → A.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FromWorker {
    /// Parts of a run, in seq order.
    Parts {
        /// The chat.
        chat_id: ChatId,
        /// The run.
        generation: Generation,
        /// The parts.
        parts: Vec<RelayPart>,
        /// When B sent the frame (µs since the Unix epoch), for the latency metric.
        sent_at_us: i64,
    },
    /// The worker committed this run's messages up to `through`; every part
    /// of their steps was sent before this frame. The follower holds those
    /// messages (which reach it through the database) until this arrives,
    /// so its clients see a step's parts before the message that ends it.
    Committed {
        /// The chat.
        chat_id: ChatId,
        /// The run.
        generation: Generation,
        /// The newest committed message.
        through: MessageId,
    },
    /// No more parts of this run will come.
    End {
        /// The chat.
        chat_id: ChatId,
        /// The run.
        generation: Generation,
        /// Why.
        reason: EndReason,
    },
    /// A's share of the connection was full: B dropped this chat's
    /// subscription. A subscribes again from its last seq.
    Overflow {
        /// The chat.
        chat_id: ChatId,
    },
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_look_as_documented() {
        let chat_id = ChatId::new_v7();
        let sub = serde_json::to_value(ToWorker::Sub {
            chat_id,
            generation: Generation(7),
            after_seq: Some(41),
        })
        .unwrap();
        assert_eq!(
            sub,
            serde_json::json!({"op": "sub", "chat_id": chat_id, "generation": 7, "after_seq": 41})
        );
        let end = serde_json::to_value(FromWorker::End {
            chat_id,
            generation: Generation(7),
            reason: EndReason::GenerationChanged,
        })
        .unwrap();
        assert_eq!(
            end,
            serde_json::json!({"op": "end", "chat_id": chat_id, "generation": 7, "reason": "generation_changed"})
        );
        let parsed: ToWorker =
            serde_json::from_value(serde_json::json!({"op": "unsub", "chat_id": chat_id})).unwrap();
        assert_eq!(parsed, ToWorker::Unsub { chat_id });
    }
}
