//! Following a chat's run on the replica that runs it (ARCHITECTURE.md §7): while a
//! chat has local subscribers and another replica runs it, its parts are
//! relayed here. The decision is [`Following`], a pure rule over the
//! statuses seen; [`Follower`] carries it out on the hub and the relay.

use std::sync::{Arc, Mutex};

use chatd_relay::PeerManager;
use chatd_shared::{
    ids::{ChatId, Generation, ReplicaId},
    status::ChatStatus,
    sync::lock,
};

use super::hub::StreamHub;

/// Following runs on other replicas: the relay's client side, and who we
/// are (our own runs need no relay).
#[derive(Clone)]
pub struct RelayFollow {
    /// The relay's client side.
    pub peers: PeerManager,
    /// This replica.
    pub replica_id: ReplicaId,
}

/// What to do about a status of the chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Older than one already acted on: ignore it.
    Stale,
    /// Follow run `generation` on `worker`.
    Follow {
        /// The replica running it.
        worker: ReplicaId,
        /// The run.
        generation: Generation,
    },
    /// The chat runs on no other replica: follow nothing.
    Unfollow,
}

/// The newest status acted on. Notices of different writers arrive out of
/// order, and an older one must not undo a newer one.
#[derive(Debug, Default)]
pub(super) struct Following {
    newest: Option<(Generation, ChatStatus)>,
}

impl Following {
    /// The chat is `status` under `generation` (run by `worker` when
    /// running), as a notice or the row says; `me` is this replica.
    pub(super) fn on_status(
        &mut self,
        status: ChatStatus,
        generation: Generation,
        worker: Option<ReplicaId>,
        me: ReplicaId,
    ) -> Decision {
        let stale = self.newest.is_some_and(|(newest, newest_status)| {
            // Older, or a late `running` of a run that already ended.
            generation < newest
                || (generation == newest
                    && status == ChatStatus::Running
                    && newest_status != ChatStatus::Running)
        });
        if stale {
            return Decision::Stale;
        }
        self.newest = Some((generation, status));
        match worker {
            Some(worker) if status == ChatStatus::Running && worker != me => {
                Decision::Follow { worker, generation }
            }
            _ => Decision::Unfollow,
        }
    }
}

/// One chat's following, carried out.
pub(super) struct Follower {
    chat_id: ChatId,
    hub: Arc<StreamHub>,
    relay: RelayFollow,
    following: Mutex<Following>,
}

impl Follower {
    pub(super) fn new(chat_id: ChatId, hub: Arc<StreamHub>, relay: RelayFollow) -> Self {
        Self {
            chat_id,
            hub,
            relay,
            following: Mutex::default(),
        }
    }

    /// Acts on a status of the chat.
    pub(super) fn status(
        &self,
        status: ChatStatus,
        generation: Generation,
        worker: Option<ReplicaId>,
    ) {
        let decision =
            lock(&self.following).on_status(status, generation, worker, self.relay.replica_id);
        match decision {
            Decision::Stale => {}
            Decision::Follow { worker, generation } => {
                // Messages of this run now wait for its parts.
                self.hub.expect_remote(self.chat_id, generation);
                self.relay.peers.follow(self.chat_id, worker, generation);
            }
            Decision::Unfollow => self.stop(),
        }
    }

    /// Follows nothing (the chat runs nowhere else, or nobody here watches).
    pub(super) fn stop(&self) {
        self.relay.peers.unfollow(self.chat_id);
        self.hub.forget_remote(self.chat_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_elsewhere_is_followed_and_an_older_status_never_undoes_a_newer_one() {
        let (me, peer, other) = (
            ReplicaId::new_random(),
            ReplicaId::new_random(),
            ReplicaId::new_random(),
        );
        let mut following = Following::default();
        let g = Generation;
        assert_eq!(
            following.on_status(ChatStatus::Pending, g(1), None, me),
            Decision::Unfollow
        );
        assert_eq!(
            following.on_status(ChatStatus::Running, g(2), Some(peer), me),
            Decision::Follow {
                worker: peer,
                generation: g(2)
            }
        );
        // A late notice of the earlier generation.
        assert_eq!(
            following.on_status(ChatStatus::Pending, g(1), None, me),
            Decision::Stale
        );
        // The run ends; a late `running` of it must not start following again.
        assert_eq!(
            following.on_status(ChatStatus::Waiting, g(2), None, me),
            Decision::Unfollow
        );
        assert_eq!(
            following.on_status(ChatStatus::Running, g(2), Some(peer), me),
            Decision::Stale
        );
        // Recovered onto another replica: follow that one.
        assert_eq!(
            following.on_status(ChatStatus::Running, g(4), Some(other), me),
            Decision::Follow {
                worker: other,
                generation: g(4)
            }
        );
        // Our own run needs no relay.
        assert_eq!(
            following.on_status(ChatStatus::Running, g(5), Some(me), me),
            Decision::Unfollow
        );
    }
}
