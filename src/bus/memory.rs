//! The embedded bus: a bounded tokio channel.

use tokio::sync::mpsc;

use super::{Closed, Publisher, Subscriber, TryPublishError};
use crate::telemetry::Gauge;

/// Creates a bounded in-process topic holding at most `capacity` items. `depth` is kept at the
/// number of queued items as seen by the consumer.
pub fn channel<T: Send + 'static>(
    capacity: usize,
    depth: Gauge,
) -> (MemoryPublisher<T>, MemorySubscriber<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (MemoryPublisher { tx }, MemorySubscriber { rx, depth })
}

/// Producing side of an in-process topic.
#[derive(Debug)]
pub struct MemoryPublisher<T> {
    tx: mpsc::Sender<T>,
}

impl<T> Clone for MemoryPublisher<T> {
    fn clone(&self) -> Self {
        MemoryPublisher {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static> Publisher<T> for MemoryPublisher<T> {
    async fn publish(&self, item: T) -> Result<(), Closed> {
        self.tx.send(item).await.map_err(|_| Closed)
    }

    fn try_publish(&self, item: T) -> Result<(), TryPublishError> {
        self.tx.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TryPublishError::Full,
            mpsc::error::TrySendError::Closed(_) => TryPublishError::Closed,
        })
    }
}

/// Consuming side of an in-process topic.
#[derive(Debug)]
pub struct MemorySubscriber<T> {
    rx: mpsc::Receiver<T>,
    depth: Gauge,
}

impl<T: Send + 'static> Subscriber<T> for MemorySubscriber<T> {
    fn next_blocking(&mut self) -> Option<T> {
        let item = self.rx.blocking_recv();
        self.depth.set(self.rx.len() as u64);
        item
    }

    fn try_next(&mut self) -> Option<T> {
        let item = self.rx.try_recv().ok();
        self.depth.set(self.rx.len() as u64);
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_try_publish_and_drains_in_order() {
        let (tx, mut rx) = channel::<u32>(2, Gauge::default());
        assert_eq!(tx.try_publish(1), Ok(()));
        assert_eq!(tx.try_publish(2), Ok(()));
        assert_eq!(tx.try_publish(3), Err(TryPublishError::Full));
        assert_eq!(rx.try_next(), Some(1));
        assert_eq!(rx.try_next(), Some(2));
        assert_eq!(rx.try_next(), None);
        drop(tx);
        assert_eq!(rx.next_blocking(), None);
    }
}
