//! A channel bounded like `crossbeam_channel::bounded` whose memory follows what is queued.
//!
//! A crossbeam bounded channel allocates every slot when it is made. The kubelet's long
//! queues (1,000 PLEG events, 1,000 events waiting to be written) are almost always empty, so
//! they would hold their whole size for the life of the process, once per node in a hollow
//! process. This one sits on an unbounded channel, which allocates blocks of slots as
//! messages arrive and frees them as they are taken, and refuses a message once `capacity`
//! are waiting. With several senders sending at the same instant the count can pass
//! `capacity` by at most one message per sender.

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// The sending side; clones share the channel and its bound.
pub struct CappedSender<T> {
    tx: Sender<T>,
    capacity: usize,
}

impl<T> Clone for CappedSender<T> {
    fn clone(&self) -> Self {
        CappedSender {
            tx: self.tx.clone(),
            capacity: self.capacity,
        }
    }
}

impl<T> std::fmt::Debug for CappedSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CappedSender")
            .field("queued", &self.tx.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// A channel that holds at most `capacity` messages (at least one).
pub fn channel<T>(capacity: usize) -> (CappedSender<T>, Receiver<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let capacity = capacity.max(1);
    (CappedSender { tx, capacity }, rx)
}

impl<T> CappedSender<T> {
    /// Queues `value` unless `capacity` messages are already waiting (`Full`) or the receiver
    /// is gone (`Disconnected`). Never blocks.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        if self.tx.len() >= self.capacity {
            return Err(TrySendError::Full(value));
        }
        self.tx.try_send(value)
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_capacity_and_takes_again_once_drained() {
        let (tx, rx) = channel(3);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.len(), 3);
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.recv().unwrap(), 0);
        tx.try_send(4).unwrap();
        assert!(matches!(tx.try_send(5), Err(TrySendError::Full(5))));
        let rest: Vec<_> = rx.try_iter().collect();
        assert_eq!(rest, vec![1, 2, 4]);
        assert!(tx.is_empty());
    }

    #[test]
    fn clones_share_the_bound_and_a_gone_receiver_is_reported() {
        let (tx, rx) = channel(2);
        let other = tx.clone();
        tx.try_send("a").unwrap();
        other.try_send("b").unwrap();
        assert!(matches!(other.try_send("c"), Err(TrySendError::Full("c"))));
        assert!(matches!(tx.try_send("d"), Err(TrySendError::Full("d"))));
        drop(rx);
        let (tx, rx) = channel::<u8>(0);
        tx.try_send(1).unwrap();
        assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
        drop(rx);
        // Not full any more: the messages went with the receiver.
        assert!(matches!(tx.try_send(3), Err(TrySendError::Disconnected(3))));
    }
}
