//! Who holds the connection slots, and which connection gives its slot up.
//!
//! Policy: at most `max` connections at once, and at most `per_client` of them from one
//! client address (an IPv6 client counts per /64, what one host usually holds; an
//! IPv4-mapped address as its IPv4 one). A connection is *waiting* while it is idle or
//! its request's headers are still arriving: from its opening and from the end of each
//! response until the next request's headers are whole. When a new connection finds
//! its client at the cap, that client's connection that has waited longest is closed
//! for it; when it finds every slot taken, the longest-waiting connection of the client
//! holding the most is closed. Only a connection that has waited at least `settle` (a
//! second, or half the header timeout if less) is closed: a client's headers follow its
//! connect at once, so a burst of fresh connections is answered, or refused cleanly, and
//! never cut off before its request. When no connection may be closed (each is in the
//! middle of a request, streaming its answer, or only just ready for one) the new one
//! is refused. So idle or half-sent connections, from one address or many, keep a
//! normal request out for at most `settle`.
//!
//! Cost: the table is locked when a connection opens and when it ends, never per
//! request; a request's start and end are a few atomic operations on its connection's
//! [`Held`]. Finding a connection to close looks at the client's own connections (at
//! most `per_client`), or over the global cap at every one, which a flood over the cap
//! that finds none repeats at most every `BARREN_US`.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::sync::Notify;

/// The connection slots of one listener.
pub(super) struct Slots {
    table: Mutex<Table>,
    max: usize,
    per_client: usize,
    /// How long a connection waits before it may be closed for a new one (µs).
    settle_us: u64,
    epoch: Instant,
    /// Told when the last connection task has ended.
    all_gone: Notify,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// The connections holding a slot, by client (no entry: none).
    clients: HashMap<IpAddr, Vec<Arc<Held>>>,
    /// How many connections hold a slot.
    open: usize,
    /// Until when (µs since `epoch`) a search of every connection for one to close is
    /// not repeated, having just found none: a flood over the global cap costs a search
    /// every few milliseconds, not one per connection.
    barren_until: u64,
    /// Connection tasks still running, including those told to close.
    tasks: usize,
}

/// How long a fruitless search of every connection is not repeated.
const BARREN_US: u64 = 10_000;

/// What the table and a connection's task share.
pub(super) struct Held {
    id: u64,
    client: IpAddr,
    epoch: Instant,
    /// Requests whose headers have arrived and whose answer is not all written.
    requests: AtomicUsize,
    /// Requests whose headers have arrived and whose answer is not made yet.
    answering: AtomicUsize,
    /// When the connection last began to wait for a request (µs since `epoch`).
    waiting_since: AtomicU64,
    /// Told when the connection should close to free its slot.
    evicted: Notify,
}

/// The slot of an admitted connection, given back when dropped.
pub(super) struct Slot {
    slots: Arc<Slots>,
    pub(super) held: Arc<Held>,
}

/// The key a client's connections are counted under.
pub(crate) fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
        v4 => v4,
    }
}

fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl Slots {
    /// `per_client` 0: no per-client cap.
    pub(super) fn new(max: usize, per_client: usize, settle: Duration) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::default(),
            max: max.max(1),
            per_client: if per_client == 0 {
                usize::MAX
            } else {
                per_client
            },
            settle_us: u64::try_from(settle.as_micros()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            all_gone: Notify::new(),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // The table is consistent between statements: a panic elsewhere leaves it usable.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection from `ip`, closing a waiting connection to make room
    /// if need be; `None`: refuse it.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let client = client_of(ip);
        let now = micros_since(self.epoch);
        let mut table = self.table();
        let holding = table.clients.get(&client).map_or(0, Vec::len);
        if holding >= self.per_client {
            table.evict(Some(client), now, self.settle_us)?;
        } else if table.open >= self.max {
            table.evict(None, now, self.settle_us)?;
        }
        let id = table.next_id;
        table.next_id += 1;
        let held = Arc::new(Held {
            id,
            client,
            epoch: self.epoch,
            requests: AtomicUsize::new(0),
            answering: AtomicUsize::new(0),
            waiting_since: AtomicU64::new(now),
            evicted: Notify::new(),
        });
        table.clients.entry(client).or_default().push(held.clone());
        table.open += 1;
        table.tasks += 1;
        Some(Slot {
            slots: self.clone(),
            held,
        })
    }

    /// Waits up to `grace` for every connection task to end: whether they did.
    pub(super) async fn all_closed(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let gone = self.all_gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.table().tasks == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, gone).await.is_err() {
                return false;
            }
        }
    }
}

impl Table {
    /// Closes the connection that has waited longest, of `client` or (`None`) of the
    /// client holding the most, among those that have waited `settle_us` by `now`:
    /// whether there was one.
    fn evict(&mut self, client: Option<IpAddr>, now: u64, settle_us: u64) -> Option<()> {
        let settled = |h: &Arc<Held>| {
            let since = h.waiting_since.load(Ordering::Acquire);
            (h.waiting() && now.saturating_sub(since) >= settle_us).then_some(since)
        };
        // The longest-waiting settled connection of one client: (since, id, client).
        let longest = |conns: &Vec<Arc<Held>>| {
            conns
                .iter()
                .filter_map(|h| Some((settled(h)?, h.id, h.client)))
                .min()
        };
        let victim = match client {
            Some(client) => longest(self.clients.get(&client)?)?,
            None => {
                if now < self.barren_until {
                    return None;
                }
                let found = self
                    .clients
                    .values()
                    .filter_map(|conns| Some((conns.len(), longest(conns)?)))
                    .max_by_key(|(holding, (since, id, _))| (*holding, Reverse((*since, *id))));
                let Some((_, victim)) = found else {
                    self.barren_until = now + BARREN_US;
                    return None;
                };
                victim
            }
        };
        let (_, id, client) = victim;
        let held = self.forget(client, id)?;
        tracing::debug!(
            client = %held.client,
            "closing a waiting connection to make room for a new one"
        );
        held.evicted.notify_one();
        Some(())
    }

    /// Takes connection `id` of `client` off the table (it holds no slot any more).
    fn forget(&mut self, client: IpAddr, id: u64) -> Option<Arc<Held>> {
        let conns = self.clients.get_mut(&client)?;
        let at = conns.iter().position(|h| h.id == id)?;
        let held = conns.swap_remove(at);
        if conns.is_empty() {
            self.clients.remove(&client);
        }
        self.open -= 1;
        Some(held)
    }

    /// Whether connection `id` of `client` holds a slot.
    #[cfg(test)]
    fn holds(&self, client: IpAddr, id: u64) -> bool {
        self.clients
            .get(&client)
            .is_some_and(|conns| conns.iter().any(|h| h.id == id))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.slots.table();
        table.forget(self.held.client, self.held.id);
        table.tasks -= 1;
        if table.tasks == 0 {
            self.slots.all_gone.notify_waiters();
        }
    }
}

impl Held {
    /// Idle, or its request's headers still arriving.
    fn waiting(&self) -> bool {
        self.requests.load(Ordering::Acquire) == 0
    }

    /// Whether a request's answer is still being made (shutdown lets it finish).
    pub(super) fn answering(&self) -> bool {
        self.answering.load(Ordering::Acquire) > 0
    }

    /// Whether a request is in progress (its answer not all written).
    pub(super) fn in_request(&self) -> bool {
        !self.waiting()
    }

    /// Told to close to make room.
    pub(super) async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

/// A request in progress on a connection, from its headers to the end of its answer.
pub(super) struct InRequest {
    held: Arc<Held>,
    answering: bool,
}

impl InRequest {
    pub(super) fn start(held: &Arc<Held>) -> Self {
        held.requests.fetch_add(1, Ordering::AcqRel);
        held.answering.fetch_add(1, Ordering::AcqRel);
        Self {
            held: held.clone(),
            answering: true,
        }
    }

    /// The answer is made: its body carries the request on until it is all written.
    pub(super) fn answered<B>(mut self, answer: hyper::Response<B>) -> hyper::Response<Tracked<B>> {
        self.held.answering.fetch_sub(1, Ordering::AcqRel);
        self.answering = false;
        answer.map(|inner| Tracked {
            inner,
            _request: self,
        })
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        if self.answering {
            self.held.answering.fetch_sub(1, Ordering::AcqRel);
        }
        self.held
            .waiting_since
            .store(micros_since(self.held.epoch), Ordering::Release);
        self.held.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that ends its request when hyper is done with it.
pub(super) struct Tracked<B> {
    inner: B,
    _request: InRequest,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn holds(slots: &Slots, slot: &Slot) -> bool {
        slots.table().holds(slot.held.client, slot.held.id)
    }

    #[test]
    fn clients_are_counted_per_address_and_ipv6_per_64() {
        assert_eq!(client_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(
            client_of(ip("::ffff:192.0.2.7")),
            client_of(ip("::ffff:192.0.2.8"))
        );
    }

    #[test]
    fn at_the_cap_the_longest_waiting_connection_of_the_biggest_holder_goes() {
        let slots = Slots::new(4, 3, Duration::ZERO);
        let a = || slots.admit(ip("192.0.2.1")).expect("admitted");
        let (a1, a2, a3) = (a(), a(), a());
        let b1 = slots.admit(ip("192.0.2.2")).expect("admitted");
        // a1 is in a request: a2 has waited longest of a's idle ones.
        let request = InRequest::start(&a1.held);
        let _c1 = slots.admit(ip("192.0.2.3")).expect("room made");
        assert!(holds(&slots, &a1));
        assert!(!holds(&slots, &a2));
        assert!(holds(&slots, &a3));
        assert!(holds(&slots, &b1));
        // b holds 1 of its 3, every slot is taken: a, holding 2, loses its waiting one.
        let _b2 = slots.admit(ip("192.0.2.2")).expect("room made");
        assert!(!holds(&slots, &a3));
        drop(request);
        assert_eq!(slots.table().open, 4);
    }

    #[test]
    fn a_client_at_its_cap_with_every_connection_busy_is_refused() {
        let slots = Slots::new(10, 2, Duration::ZERO);
        let one = slots.admit(ip("192.0.2.1")).expect("admitted");
        let two = slots.admit(ip("192.0.2.1")).expect("admitted");
        let _busy = (InRequest::start(&one.held), InRequest::start(&two.held));
        assert!(slots.admit(ip("192.0.2.1")).is_none());
        assert!(slots.admit(ip("192.0.2.2")).is_some());
    }

    #[test]
    fn a_connection_only_just_opened_is_not_closed_for_another() {
        let slots = Slots::new(10, 1, Duration::from_secs(60));
        let _fresh = slots.admit(ip("192.0.2.1")).expect("admitted");
        assert!(slots.admit(ip("192.0.2.1")).is_none());
    }
}
