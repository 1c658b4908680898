//! The embedded bus: a bounded tokio channel, bounded both in items and in bytes.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use super::{Closed, Publisher, Subscriber, TryPublishError, Weigh};
use crate::telemetry::Gauge;

/// Creates an in-process topic holding at most `capacity` items and about `max_bytes` bytes of
/// them (an item heavier than the whole budget counts as the whole budget). `depth` is kept at
/// the number of queued items as seen by the consumer.
pub fn channel<T: Weigh + Send + 'static>(
    capacity: usize,
    max_bytes: usize,
    depth: Gauge,
) -> (MemoryPublisher<T>, MemorySubscriber<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    // Timed waits run on the runtime that created the channel, when there is one.
    let runtime = tokio::runtime::Handle::try_current().ok();
    let budget = max_bytes.clamp(1, u32::MAX as usize);
    let bytes = Arc::new(Semaphore::new(budget));
    (
        MemoryPublisher {
            tx,
            bytes: bytes.clone(),
            budget,
        },
        MemorySubscriber {
            rx,
            bytes,
            budget,
            depth,
            runtime,
        },
    )
}

fn cost(weight: usize, budget: usize) -> u32 {
    u32::try_from(weight.clamp(1, budget)).unwrap_or(u32::MAX)
}

/// Producing side of an in-process topic.
#[derive(Debug)]
pub struct MemoryPublisher<T> {
    tx: mpsc::Sender<T>,
    bytes: Arc<Semaphore>,
    budget: usize,
}

impl<T> Clone for MemoryPublisher<T> {
    fn clone(&self) -> Self {
        MemoryPublisher {
            tx: self.tx.clone(),
            bytes: self.bytes.clone(),
            budget: self.budget,
        }
    }
}

impl<T: Weigh + Send + 'static> Publisher<T> for MemoryPublisher<T> {
    async fn publish(&self, item: T) -> Result<(), Closed> {
        let n = cost(item.weight(), self.budget);
        // The bytes go back to the budget when the consumer takes the item.
        self.bytes
            .acquire_many(n)
            .await
            .map_err(|_| Closed)?
            .forget();
        self.tx.send(item).await.map_err(|_| Closed)
    }

    fn try_publish(&self, item: T) -> Result<(), TryPublishError> {
        let n = cost(item.weight(), self.budget);
        let permit = match self.bytes.try_acquire_many(n) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(TryPublishError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(TryPublishError::Closed),
        };
        match self.tx.try_send(item) {
            Ok(()) => {
                permit.forget();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(TryPublishError::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(TryPublishError::Closed),
        }
    }
}

/// Consuming side of an in-process topic.
#[derive(Debug)]
pub struct MemorySubscriber<T> {
    rx: mpsc::Receiver<T>,
    bytes: Arc<Semaphore>,
    budget: usize,
    depth: Gauge,
    runtime: Option<tokio::runtime::Handle>,
}

impl<T> Drop for MemorySubscriber<T> {
    fn drop(&mut self) {
        // Publishers waiting for room must not wait forever for a consumer that is gone.
        self.bytes.close();
    }
}

impl<T: Weigh> MemorySubscriber<T> {
    fn took(&self, item: Option<T>) -> Option<T> {
        if let Some(i) = &item {
            self.bytes
                .add_permits(cost(i.weight(), self.budget) as usize);
        }
        self.depth.set(self.rx.len() as u64);
        item
    }
}

impl<T: Weigh + Send + 'static> Subscriber<T> for MemorySubscriber<T> {
    fn next_blocking(&mut self) -> Option<T> {
        let item = self.rx.blocking_recv();
        self.took(item)
    }

    fn try_next(&mut self) -> Option<T> {
        let item = self.rx.try_recv().ok();
        self.took(item)
    }

    fn next_within(&mut self, wait: std::time::Duration) -> super::Received<T> {
        use super::Received;
        let got = match &self.runtime {
            Some(rt) => {
                let rx = &mut self.rx;
                rt.block_on(async { tokio::time::timeout(wait, rx.recv()).await })
            }
            // No runtime to time the wait on: wait without a timeout.
            None => Ok(self.rx.blocking_recv()),
        };
        match got {
            Ok(Some(item)) => match self.took(Some(item)) {
                Some(item) => Received::Item(item),
                None => Received::Closed,
            },
            Ok(None) => Received::Closed,
            Err(_) => Received::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weigh for u32 {
        fn weight(&self) -> usize {
            *self as usize
        }
    }

    #[test]
    fn a_full_queue_refuses_try_publish_and_drains_in_order() {
        let (tx, mut rx) = channel::<u32>(2, 1000, Gauge::default());
        assert_eq!(tx.try_publish(1), Ok(()));
        assert_eq!(tx.try_publish(2), Ok(()));
        assert_eq!(tx.try_publish(3), Err(TryPublishError::Full));
        assert_eq!(rx.try_next(), Some(1));
        assert_eq!(rx.try_next(), Some(2));
        assert_eq!(rx.try_next(), None);
        drop(tx);
        assert_eq!(rx.next_blocking(), None);
    }

    #[test]
    fn the_byte_budget_refuses_heavy_items_until_the_consumer_takes_some() {
        let (tx, mut rx) = channel::<u32>(100, 100, Gauge::default());
        assert_eq!(tx.try_publish(60), Ok(()));
        assert_eq!(tx.try_publish(50), Err(TryPublishError::Full));
        assert_eq!(tx.try_publish(40), Ok(()));
        assert_eq!(rx.try_next(), Some(60));
        assert_eq!(tx.try_publish(50), Ok(()));
        // An item heavier than the whole budget still fits alone.
        assert_eq!(rx.try_next(), Some(40));
        assert_eq!(rx.try_next(), Some(50));
        assert_eq!(tx.try_publish(5000), Ok(()));
        assert_eq!(rx.try_next(), Some(5000));
    }

    #[test]
    fn a_publisher_waiting_for_room_is_released_when_the_consumer_goes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = channel::<u32>(100, 10, Gauge::default());
        assert_eq!(tx.try_publish(10), Ok(()));
        let waiting = tx.clone();
        let handle = rt.spawn(async move { waiting.publish(5).await });
        drop(rx);
        assert_eq!(rt.block_on(handle).ok(), Some(Err(Closed)));
    }
}
