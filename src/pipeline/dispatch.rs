//! Routing consumed messages to processor lanes, within the channel and byte bounds.
//!
//! Invariant: the consumer thread is the only sender, so room in the byte budget, once seen,
//! stays until its send; a send that finds its lane full past its deadline hands the message
//! back with its bytes released. All events of one order (one key) go to one lane, so two
//! processors never race on the same row.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use flume::SendTimeoutError;

use crate::error::Error;
use crate::pipeline::Envelope;

/// Bytes of messages taken from Kafka and not yet durable, against a limit.
#[derive(Debug)]
pub struct InFlight {
    bytes: AtomicU64,
    limit: u64,
    /// Signalled when bytes are released; the lock orders a waiter's check before the signal.
    released: Condvar,
    lock: Mutex<()>,
}

impl InFlight {
    pub fn new(limit: u64) -> Self {
        Self {
            bytes: AtomicU64::new(0),
            limit,
            released: Condvar::new(),
            lock: Mutex::new(()),
        }
    }

    /// Waits until `deadline` for room for `weight` bytes; returns whether there is.
    pub fn wait_for_room(&self, weight: u64, deadline: Instant) -> bool {
        if self.has_room(weight) {
            return true;
        }
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        while !self.has_room(weight) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = match self.released.wait_timeout(guard, left) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }

    /// One message is always admitted when nothing is in flight, whatever its size, so an
    /// oversized message cannot wedge the pipeline.
    pub fn has_room(&self, weight: u64) -> bool {
        let now = self.bytes.load(Ordering::Acquire);
        now == 0 || now + weight <= self.limit
    }

    pub fn add(&self, weight: u64) {
        self.bytes.fetch_add(weight, Ordering::AcqRel);
    }

    pub fn release(&self, weight: u64) {
        self.bytes.fetch_sub(weight, Ordering::AcqRel);
        let _ordered = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.released.notify_all();
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }
}

/// Creates `n` bounded lanes: the dispatcher's senders and the processors' receivers.
pub fn lanes(
    n: usize,
    capacity: usize,
) -> (Vec<flume::Sender<Envelope>>, Vec<flume::Receiver<Envelope>>) {
    (0..n).map(|_| flume::bounded(capacity)).unzip()
}

/// A lane as [`Dispatcher::lane_of`] picks it, the only way to name one: a message is sent
/// to the lane of its key (or partition) and no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane(usize);

impl Lane {
    pub fn index(self) -> usize {
        self.0
    }
}

/// The consumer thread's side of the lanes. Dropping it closes every lane, which is how the
/// processors learn that no more messages will come.
#[derive(Debug)]
pub struct Dispatcher {
    senders: Vec<flume::Sender<Envelope>>,
    in_flight: Arc<InFlight>,
}

impl Dispatcher {
    pub fn new(senders: Vec<flume::Sender<Envelope>>, in_flight: Arc<InFlight>) -> Self {
        assert!(!senders.is_empty(), "at least one lane");
        Self { senders, in_flight }
    }

    /// The lane of a message, from its partition and (cut) key: by key (the order id), so an
    /// order always meets the same processor; by partition for keyless messages (they are
    /// dead-lettered anyway). Known before the message is copied, so its bytes go into its
    /// lane's chunk.
    pub fn lane_of(&self, partition: i32, key: Option<&[u8]>) -> Lane {
        let n = self.senders.len() as u64;
        let hash = match key {
            Some(key) => BuildHasherDefault::<DefaultHasher>::default().hash_one(key),
            None => partition as u64,
        };
        Lane((hash % n) as usize)
    }

    /// How many lanes there are.
    pub fn lanes(&self) -> usize {
        self.senders.len()
    }

    /// Sends a message to `lane` (its [`Dispatcher::lane_of`]), waiting until `deadline` for
    /// room there; gives it back if there is none by then. Fails only when the lane's processor
    /// is gone, which the worker treats as fatal.
    pub fn send_to(
        &self,
        lane: Lane,
        envelope: Envelope,
        deadline: Instant,
    ) -> Result<Option<Envelope>, Error> {
        let weight = envelope.weight();
        self.in_flight.add(weight);
        match self.senders[lane.0].send_deadline(envelope, deadline) {
            Ok(()) => Ok(None),
            Err(SendTimeoutError::Timeout(back)) => {
                self.in_flight.release(weight);
                Ok(Some(back))
            }
            Err(SendTimeoutError::Disconnected(_)) => {
                self.in_flight.release(weight);
                Err(Error::TaskFailed(format!(
                    "processor {} stopped taking messages",
                    lane.0
                )))
            }
        }
    }

    /// Messages waiting in the lanes.
    pub fn queued(&self) -> usize {
        self.senders.iter().map(flume::Sender::len).sum()
    }

    /// Messages waiting in each lane.
    pub fn depths(&self) -> impl Iterator<Item = usize> + '_ {
        self.senders.iter().map(flume::Sender::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::Position;
    use std::time::Duration;

    fn envelope(key: &str, partition: i32) -> Envelope {
        let pos = Position {
            partition,
            generation: 1,
            offset: 0,
        };
        Envelope::new(pos, Some(key.as_bytes()), Some(b"{}"), None, 1024)
    }

    #[test]
    fn the_same_key_always_takes_the_same_lane() {
        let (tx, _rx) = lanes(4, 8);
        let d = Dispatcher::new(tx, Arc::new(InFlight::new(1 << 20)));
        for key in ["a", "order-17", "6f1c2a4e-7a43-4a39-9f7e-2b1d7c1e0a11"] {
            let lanes: Vec<usize> = (0..5)
                .map(|p| d.lane_of(p, Some(key.as_bytes())).index())
                .collect();
            assert!(lanes.windows(2).all(|w| w[0] == w[1]), "{key}: {lanes:?}");
        }
    }

    #[test]
    fn keys_spread_over_all_lanes() {
        let (tx, _rx) = lanes(4, 8);
        let d = Dispatcher::new(tx, Arc::new(InFlight::new(1 << 20)));
        let mut used = [0usize; 4];
        for i in 0..400 {
            used[d.lane_of(0, Some(format!("order-{i}").as_bytes())).index()] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "{used:?}");
    }

    #[test]
    fn keyless_messages_take_their_partition_s_lane() {
        let (tx, _rx) = lanes(4, 8);
        let d = Dispatcher::new(tx, Arc::new(InFlight::new(1 << 20)));
        let lanes: Vec<usize> = (0..8).map(|p| d.lane_of(p, None).index()).collect();
        assert_eq!(lanes, [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    /// A message to the only lane of a one-lane dispatcher.
    fn send_one(d: &Dispatcher, deadline: Instant) -> Result<Option<Envelope>, Error> {
        d.send_to(Lane(0), envelope("a", 0), deadline)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(20)
    }

    #[test]
    fn a_full_lane_gives_the_message_back_at_the_deadline_with_its_bytes_released() {
        let budget = Arc::new(InFlight::new(1 << 20));
        let (tx, _rx) = lanes(1, 2);
        let d = Dispatcher::new(tx, budget.clone());
        assert!(send_one(&d, soon()).unwrap().is_none());
        assert!(send_one(&d, soon()).unwrap().is_none());
        let held = budget.bytes();
        let back = send_one(&d, soon()).unwrap();
        assert!(back.is_some());
        assert_eq!(budget.bytes(), held);
    }

    #[test]
    fn a_send_waiting_on_a_full_lane_goes_through_as_soon_as_its_processor_takes_a_message() {
        let (tx, rx) = lanes(1, 1);
        let d = Dispatcher::new(tx, Arc::new(InFlight::new(1 << 20)));
        assert!(send_one(&d, soon()).unwrap().is_none());
        let taker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            rx[0].recv().unwrap();
            rx
        });
        let started = Instant::now();
        let far = started + Duration::from_secs(10);
        assert!(send_one(&d, far).unwrap().is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(taker.join());
    }

    #[test]
    fn the_byte_budget_has_no_room_until_bytes_are_released() {
        let budget = Arc::new(InFlight::new(300));
        let (tx, _rx) = lanes(1, 100);
        let d = Dispatcher::new(tx, budget.clone());
        let w = envelope("a", 0).weight();
        assert!(
            budget.wait_for_room(w, soon()),
            "an empty pipeline admits anything"
        );
        assert!(send_one(&d, soon()).unwrap().is_none());
        assert!(send_one(&d, soon()).unwrap().is_none());
        assert!(!budget.wait_for_room(w, soon()));
        let releaser = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                budget.release(w);
            })
        };
        assert!(budget.wait_for_room(w, Instant::now() + Duration::from_secs(10)));
        releaser.join().unwrap();
    }

    #[test]
    fn an_oversized_message_is_admitted_into_an_empty_pipeline() {
        assert!(InFlight::new(10).has_room(1_000_000));
    }

    #[test]
    fn sending_to_a_lane_whose_processor_is_gone_is_an_error_and_releases_the_bytes() {
        let budget = Arc::new(InFlight::new(1 << 20));
        let (tx, rx) = lanes(1, 2);
        drop(rx);
        let d = Dispatcher::new(tx, budget.clone());
        assert!(send_one(&d, soon()).is_err());
        assert_eq!(budget.bytes(), 0);
    }
}
