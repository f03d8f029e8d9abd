//! Messages as librdkafka hands them over: many per call from one queue that every assigned
//! partition forwards to, and read in place, headers by their bytes.
//!
//! Invariants: a partition's messages reach the [`FetchQueue`] only if it was forwarded there
//! before its fetch started. librdkafka clears the forward when a fetch stops and, once an
//! application has forwarded a partition, never puts back its own, so every assignment forwards
//! again. The queue and every message taken from it are destroyed before the consumer is:
//! librdkafka's destroy would otherwise wait for them, or free what they point to. A header's
//! name is read as bytes: Kafka does not require UTF-8 there, and rdkafka's own reader panics on
//! a name that is not.

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::{IsError, KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;

/// A queue of the consumer's own that assigned partitions forward their messages to. A wait
/// for messages here ends as soon as anything arrives on the consumer's own queue too (a
/// rebalance, a commit result, an error), so that those are served without delay.
pub(crate) struct FetchQueue {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// The consumer's own queue, which wakes this one.
    events: Option<NonNull<rdsys::rd_kafka_queue_t>>,
}

// SAFETY: librdkafka's queues are locked internally and may be used from any thread.
unsafe impl Send for FetchQueue {}
unsafe impl Sync for FetchQueue {}

/// Called by librdkafka, on any of its threads and with the consumer's queue locked, when that
/// queue stops being empty: it only wakes the fetch queue's waiter.
unsafe extern "C" fn wake(_: *mut rdsys::rd_kafka_t, fetch_queue: *mut std::ffi::c_void) {
    // SAFETY: the opaque is the fetch queue, which turns this callback off before it goes.
    unsafe { rdsys::rd_kafka_queue_yield(fetch_queue.cast()) }
}

impl FetchQueue {
    fn new<C: ClientContext>(client: &Client<C>) -> Option<Self> {
        let rk = client.native_ptr();
        // SAFETY: the client is alive; both handles are destroyed by Drop, the callback turned
        // off first.
        unsafe {
            let queue = NonNull::new(rdsys::rd_kafka_queue_new(rk))?;
            let events = NonNull::new(rdsys::rd_kafka_queue_get_consumer(rk));
            if let Some(events) = events {
                let opaque = queue.as_ptr().cast();
                rdsys::rd_kafka_queue_cb_event_enable(events.as_ptr(), Some(wake), opaque);
            }
            Some(Self { queue, events })
        }
    }

    /// Whether rebalances, commit results or errors wait on the consumer's own queue (a wake
    /// comes only when that queue stops being empty, so a take must not wait while it is not).
    pub fn events_waiting(&self) -> bool {
        // SAFETY: a handle this queue owns.
        self.events
            .is_some_and(|e| unsafe { rdsys::rd_kafka_queue_length(e.as_ptr()) } > 0)
    }

    /// Sends the partitions' messages here from now on. Returns those it could not forward
    /// (librdkafka knows no such partition): their messages stay on the consumer's queue.
    pub fn forward<C: ClientContext>(
        &self,
        client: &Client<C>,
        topic: &str,
        partitions: &[i32],
    ) -> Vec<i32> {
        let Ok(topic) = CString::new(topic) else {
            return partitions.to_vec();
        };
        let mut missed = Vec::new();
        for &p in partitions {
            // SAFETY: the client and the topic's text outlive the call; the partition queue's
            // handle is released at once (the forward keeps its own reference to this queue).
            unsafe {
                let partition =
                    rdsys::rd_kafka_queue_get_partition(client.native_ptr(), topic.as_ptr(), p);
                if partition.is_null() {
                    missed.push(p);
                    continue;
                }
                rdsys::rd_kafka_queue_forward(partition, self.queue.as_ptr());
                rdsys::rd_kafka_queue_destroy(partition);
            }
        }
        missed
    }

    /// Moves up to `batch`'s capacity of messages into it: those already queued, or, if there
    /// are none, the first to arrive within `timeout` and those that came with it. (A batch
    /// call alone waits until the batch is full or the whole timeout has passed: at a slow rate
    /// every message would wait out the timeout.) Returns how many it took.
    pub fn take(&self, timeout: Duration, batch: &mut Batch) -> usize {
        batch.clear();
        let capacity = batch.messages.capacity();
        if capacity == 0 {
            return 0;
        }
        let queue = self.queue.as_ptr();
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the buffer has room for `capacity` pointers; librdkafka writes `n` of them,
        // each a message this batch now owns.
        unsafe {
            let at = batch.messages.as_mut_ptr();
            let queued = |at: *mut *mut rdsys::rd_kafka_message_t, room: usize| {
                usize::try_from(rdsys::rd_kafka_consume_batch_queue(queue, 0, at, room))
                    .unwrap_or(0)
            };
            let mut n = queued(at, capacity);
            if n == 0 && timeout_ms > 0 {
                let first = rdsys::rd_kafka_consume_queue(queue, timeout_ms);
                if !first.is_null() {
                    *at = first;
                    n = 1 + queued(at.add(1), capacity - 1);
                }
            }
            batch.messages.set_len(n);
            n
        }
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: each handle was made by `new` and is destroyed once. Turning the callback off
        // takes the consumer queue's lock, which a running callback holds: none runs after it.
        // Partitions still forwarding here keep the queue's memory until their fetch stops; what
        // they send meanwhile is discarded.
        unsafe {
            if let Some(events) = self.events {
                rdsys::rd_kafka_queue_cb_event_enable(events.as_ptr(), None, std::ptr::null_mut());
                rdsys::rd_kafka_queue_destroy(events.as_ptr());
            }
            rdsys::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
    }
}

/// A consumer's fetch queue: opened on first use, closed for good before the consumer is
/// destroyed.
#[derive(Default)]
pub(crate) struct FetchSlot(Mutex<Slot>);

#[derive(Default)]
enum Slot {
    #[default]
    Unopened,
    Open(Arc<FetchQueue>),
    Closed,
}

impl FetchSlot {
    /// The queue, opened on first use. `None` once closed, or if librdkafka could not make one:
    /// messages then stay on the consumer's own queue.
    pub fn open<C: ClientContext>(&self, client: &Client<C>) -> Option<Arc<FetchQueue>> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*slot, Slot::Unopened) {
            *slot = FetchQueue::new(client).map_or(Slot::Closed, |q| Slot::Open(Arc::new(q)));
        }
        match &*slot {
            Slot::Open(queue) => Some(queue.clone()),
            Slot::Unopened | Slot::Closed => None,
        }
    }

    /// Lets go of the queue, which is destroyed with its last holder.
    pub fn close(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Slot::Closed;
    }
}

/// Messages taken by one [`FetchQueue::take`], owned until the next take or the drop.
pub(crate) struct Batch {
    messages: Vec<*mut rdsys::rd_kafka_message_t>,
}

impl Batch {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            messages: Vec::with_capacity(capacity),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Fetched<'_>> {
        // SAFETY: each pointer is a message this batch owns until `clear`.
        self.messages.iter().map(|&m| Fetched(unsafe { &*m }))
    }

    /// Destroys the messages taken, which returns their share of the fetch buffers.
    pub fn clear(&mut self) {
        for m in self.messages.drain(..) {
            // SAFETY: owned by this batch, destroyed once.
            unsafe { rdsys::rd_kafka_message_destroy(m) }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One consumed message, read where librdkafka keeps it.
#[derive(Clone, Copy)]
pub(crate) struct Fetched<'a>(&'a rdsys::rd_kafka_message_t);

impl<'a> Fetched<'a> {
    pub fn of(message: &'a BorrowedMessage<'_>) -> Self {
        // SAFETY: the message lives as long as the borrow.
        Self(unsafe { &*message.ptr() })
    }

    /// What librdkafka reports in place of a message (a partition's fetch error), if it is one.
    pub fn error(&self) -> Option<KafkaError> {
        let err = self.0.err;
        if !err.is_error() {
            return None;
        }
        let code = RDKafkaErrorCode::from(err);
        Some(match code {
            RDKafkaErrorCode::Fatal => KafkaError::MessageConsumptionFatal(code),
            _ => KafkaError::MessageConsumption(code),
        })
    }

    pub fn partition(&self) -> i32 {
        self.0.partition
    }

    pub fn offset(&self) -> i64 {
        self.0.offset
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        // SAFETY: librdkafka's pointer and length of the key, alive with the message.
        unsafe { bytes(self.0.key, self.0.key_len) }
    }

    pub fn payload(&self) -> Option<&'a [u8]> {
        // SAFETY: as for the key.
        unsafe { bytes(self.0.payload, self.0.len) }
    }

    /// The message's timestamp (create or log-append time), when it has one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: reads the message's own fields.
        let ts = unsafe { rdsys::rd_kafka_message_timestamp(self.0, &mut kind) };
        let none = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        (ts != -1 && kind != none).then_some(ts)
    }

    /// The headers in order, each name and value as bytes (a null value as `None`).
    pub fn headers(&self) -> HeaderBytes<'a> {
        let mut list = std::ptr::null_mut();
        // SAFETY: librdkafka parses the headers into the message on first use and keeps them
        // with it; a message without headers answers with an error and no list.
        let err = unsafe { rdsys::rd_kafka_message_headers(self.0, &mut list) };
        let count = if err.is_error() || list.is_null() {
            0
        } else {
            // SAFETY: a list the message owns.
            unsafe { rdsys::rd_kafka_header_cnt(list) }
        };
        HeaderBytes {
            list,
            next: 0,
            count,
            _message: PhantomData,
        }
    }
}

/// Bytes librdkafka points to, or `None` for a null pointer.
///
/// # Safety
/// `ptr` must point to `len` bytes that live for `'a`.
unsafe fn bytes<'a>(ptr: *mut std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// A message's headers, read one by one from librdkafka's list.
#[derive(Clone)]
pub(crate) struct HeaderBytes<'a> {
    list: *mut rdsys::rd_kafka_headers_t,
    next: usize,
    count: usize,
    _message: PhantomData<&'a rdsys::rd_kafka_message_t>,
}

impl<'a> Iterator for HeaderBytes<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.count {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            // SAFETY: `next` is below the list's count; name and value stay with the message.
            let err = unsafe {
                rdsys::rd_kafka_header_get_all(
                    self.list, self.next, &mut name, &mut value, &mut size,
                )
            };
            self.next += 1;
            if err.is_error() || name.is_null() {
                continue;
            }
            // SAFETY: librdkafka's names end with a NUL; a value is `size` bytes or null.
            let name = unsafe { CStr::from_ptr(name) }.to_bytes();
            let value = unsafe { bytes(value.cast_mut(), size) };
            return Some((name, value));
        }
        None
    }
}

#[cfg(test)]
mod tests;
