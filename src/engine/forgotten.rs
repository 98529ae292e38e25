//! The memory of recently forgotten sessions.
//!
//! When a session is forgotten its id and last `seq` are kept here, so a feed
//! that replays it (a reconnect without resume, a server restarted from
//! the start) cannot bring it back and have all its LLM work done again:
//! frames at or below that `seq` are duplicates. A frame above it is a new
//! life of the session. The memory is bounded: the oldest ids go first.

use std::collections::{HashMap, VecDeque};

use crate::model::SessionId;

/// Ids remembered by default.
pub const DEFAULT_REMEMBERED: usize = 100_000;

#[derive(Debug)]
pub struct Forgotten {
    capacity: usize,
    last_seq: HashMap<SessionId, Option<u64>>,
    /// Ids in the order they were forgotten; may hold ids since revived,
    /// which only makes their eviction a no-op.
    order: VecDeque<SessionId>,
}

impl Forgotten {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            last_seq: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn remember(&mut self, session: SessionId, last_seq: Option<u64>) {
        if self.capacity == 0 {
            return;
        }
        if let Some(known) = self.last_seq.get_mut(&session) {
            *known = last_seq;
            return;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.last_seq.remove(&oldest);
        }
        self.order.push_back(session.clone());
        self.last_seq.insert(session, last_seq);
    }

    /// The last `seq` of a forgotten session: `Some(None)` when it had none,
    /// `None` when the id is not remembered.
    pub fn last_seq(&self, session: &SessionId) -> Option<Option<u64>> {
        self.last_seq.get(session).copied()
    }

    /// The session lives again: stop remembering it.
    pub fn revive(&mut self, session: &SessionId) {
        self.last_seq.remove(session);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last_seq.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> SessionId {
        SessionId::parse(&format!("s{n}")).unwrap()
    }

    #[test]
    fn the_oldest_go_first_and_memory_stays_bounded() {
        let mut forgotten = Forgotten::new(3);
        for n in 0..10 {
            forgotten.remember(id(n), Some(n as u64));
        }
        assert_eq!(forgotten.len(), 3);
        assert_eq!(forgotten.last_seq(&id(9)), Some(Some(9)));
        assert_eq!(forgotten.last_seq(&id(6)), None);
        forgotten.revive(&id(9));
        assert_eq!(forgotten.last_seq(&id(9)), None);
        // Forgotten again: remembered with its new seq, still bounded.
        forgotten.remember(id(8), Some(80));
        assert_eq!(forgotten.last_seq(&id(8)), Some(Some(80)));
        for n in 20..30 {
            forgotten.remember(id(n), None);
        }
        assert_eq!(forgotten.len(), 3);
        assert!(forgotten.order.len() <= 3);
        assert_eq!(forgotten.last_seq(&id(29)), Some(None));
        let mut none = Forgotten::new(0);
        none.remember(id(1), Some(1));
        assert_eq!(none.len(), 0);
    }
}
