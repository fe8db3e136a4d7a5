//! What waits for the link while the cloud is away: the newest message per
//! (operation, resource), so a status changed ten times offline goes up once, as it is now.

use crate::message::Message;
use std::collections::HashMap;

/// The most messages kept; past it the oldest goes (statuses are resent when they change).
pub const CAPACITY: usize = 4096;

/// Messages kept while offline, newest per (operation, resource), in the order first kept.
#[derive(Default)]
pub struct Outbox {
    seq: u64,
    items: HashMap<(String, String), (u64, Message)>,
}

impl Outbox {
    /// Keeps `msg`, replacing an older one for the same operation and resource.
    pub fn put(&mut self, msg: Message) {
        let k = (msg.route.operation.clone(), msg.route.resource.clone());
        self.seq += 1;
        let seq = self.items.get(&k).map(|(s, _)| *s).unwrap_or(self.seq);
        self.items.insert(k, (seq, msg));
        if self.items.len() > CAPACITY {
            if let Some(oldest) = self
                .items
                .iter()
                .min_by_key(|(_, (s, _))| *s)
                .map(|(k, _)| k.clone())
            {
                tracing::warn!(resource = %oldest.1, "offline outbox full; dropping the oldest message");
                self.items.remove(&oldest);
            }
        }
    }

    /// Takes everything, oldest first.
    pub fn drain(&mut self) -> Vec<Message> {
        let mut v: Vec<_> = self.items.drain().map(|(_, v)| v).collect();
        v.sort_by_key(|(s, _)| *s);
        v.into_iter().map(|(_, m)| m).collect()
    }

    /// How many messages wait.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::op;

    #[test]
    fn newest_per_resource_in_first_order() {
        let mut o = Outbox::default();
        let m =
            |r: &str, c: i32| Message::new("edged", "meta", op::PATCH, r).with_content(c.into());
        o.put(m("ns/podpatch/a", 1));
        o.put(m("ns/podpatch/b", 1));
        o.put(m("ns/podpatch/a", 2));
        o.put(Message::new("edged", "meta", op::DELETE, "ns/pod/a"));
        assert_eq!(o.len(), 3);
        let out = o.drain();
        assert_eq!(out[0].route.resource, "ns/podpatch/a");
        assert_eq!(out[0].content, 2);
        assert_eq!(out[1].route.resource, "ns/podpatch/b");
        assert_eq!(out[2].route.operation, op::DELETE);
        assert!(o.is_empty());
    }
}
