//! A faithful Kafka-protocol proxy between every test client and tansu: it
//! fills in what tansu leaves out and injects network faults on command.
//!
//! Why it exists (DESIGN.md, "Known broker gaps"): tansu 0.6.0 writes
//! commit/abort markers and holds read_committed consumers at the last stable
//! offset, but its Fetch responses never list aborted transactions, so
//! librdkafka hands records of aborted and fenced transactions to
//! read_committed consumers. Apache Kafka lists, per partition, every aborted
//! transaction that overlaps the fetched range as `(producer_id,
//! first_offset)`; the client then drops that producer's transactional
//! batches from `first_offset` on until it meets the producer's ABORT marker.
//! This proxy computes that list from the log's own markers, so siphon and
//! the checking consumers see the semantics of a correct broker.
//!
//! What it owns:
//! - one listener on 127.0.0.1 and, per accepted client connection, one
//!   upstream connection to the broker; size-prefixed frames are forwarded
//!   unchanged and in order both ways, except the responses below;
//! - Metadata, FindCoordinator and DescribeCluster responses: the broker's
//!   address is replaced by the proxy's (one broker advertised), so clients
//!   never bypass the proxy;
//! - READ_COMMITTED Fetch requests: sent to the broker as READ_UNCOMMITTED;
//!   in the response the proxy sets each partition's last stable offset to
//!   the one a correct broker computes from the log — where the oldest
//!   transaction without a marker begins, else the high watermark — drops
//!   the batches from there on, and fills in `aborted_transactions` from a
//!   per-partition transaction index (below). tansu's own stable offset is
//!   not used: it also waits for transactions that began before the open
//!   one, and in one long fault run it stayed at 0 in every partition for
//!   good although every transaction in the log had its marker;
//! - ListOffsets responses for the latest offset: tansu answers 0 to
//!   read_committed requests while any transaction is open in the partition
//!   (a reader would take the partition for empty) and the last batch's
//!   base offset + 1 to read_uncommitted ones; the proxy answers its own
//!   last stable offset and the high watermark that tansu's Fetch reports;
//! - the transaction index: per partition, the log read in offset order from
//!   its start (from forwarded Fetch responses when they continue where the
//!   index stopped, otherwise with the proxy's own READ_UNCOMMITTED Fetch
//!   requests on a side connection): the transactions still open (producer
//!   id → first data offset) and every aborted one (producer id, first data
//!   offset, offset of its ABORT marker);
//! - producer fencing: tansu accepts AddPartitionsToTxn and EndTxn from an
//!   epoch that a newer InitProducerId of the same transactional id has
//!   replaced when that newer producer has not written yet, so a fenced
//!   ("zombie") producer would go on committing. The proxy keeps the newest
//!   (producer id, epoch) per transactional id from InitProducerId
//!   responses and answers such a request itself with PRODUCER_FENCED, as a
//!   correct broker does: it sends the broker an ApiVersions request under
//!   the same correlation id instead, and puts its answer in that
//!   response's place, so responses keep their order;
//! - faults: [`KafkaProxy::cut`], [`KafkaProxy::set_down`],
//!   [`KafkaProxy::stall`], [`KafkaProxy::set_delay`], and
//!   [`KafkaProxy::cut_at_end_txn`]: the broker gets the EndTxn (commit or
//!   abort) and acts on it, the client never hears the answer.
//!
//! Invariants:
//! - a Fetch response for a read_committed request is forwarded only after
//!   the index has read the partition up to the response's high watermark
//!   (reading ahead if needed); its records then end at `upper`, at or
//!   below the last stable offset, so every transaction with data below
//!   `upper` has its marker in the index, and it lists exactly the aborted
//!   transactions with `first_offset < upper` whose ABORT marker is at or
//!   after the fetch offset. Listing one whose marker lies before the fetch
//!   offset would make the client drop that producer's later, committed
//!   batches.
//! - responses reach the client in the order the broker sent them.
//! - anything the proxy cannot decode is forwarded unchanged and recorded in
//!   [`KafkaProxy::errors`], which tests assert empty: the proxy never hides
//!   its own failure.
//! - it runs on its own thread and tokio runtime (usable from synchronous
//!   tests and blocking rdkafka code); every loop ends when the handle is
//!   dropped, every network wait is bounded by a timeout or by a connection
//!   closing.
//!
//! It does not touch Produce requests, SASL or TLS, and advertises one
//! broker: tansu runs one. A transaction tansu never ends (no marker, not
//! aborted at its timeout) holds its partition back for good, as it would
//! on a broker that never aborts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{AbortedTransaction, PartitionData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, DescribeClusterResponse,
    EndTxnRequest, EndTxnResponse, FetchRequest, FetchResponse, FindCoordinatorResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataResponse, ProducerId, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Largest frame the proxy accepts (the broker's default socket request
/// limit is 100 MiB); anything larger is treated as a broken stream.
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// Bound on connecting to the broker and on one read-ahead exchange.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on read-ahead Fetch requests for one partition of one response.
const MAX_READ_AHEADS: usize = 10_000;
/// Bytes per read-ahead Fetch; larger than any batch the tests produce.
const READ_AHEAD_BYTES: i32 = 16 * 1024 * 1024;
/// Fetch isolation level READ_COMMITTED.
const READ_COMMITTED: i8 = 1;
/// Kafka error OFFSET_OUT_OF_RANGE.
const OFFSET_OUT_OF_RANGE: i16 = 1;
/// Control record type of an ABORT marker (COMMIT is 1).
const CONTROL_ABORT: i16 = 0;
/// ListOffsets timestamp asking for the latest offset.
const LATEST_TIMESTAMP: i64 = -1;
/// `max_wait_ms` of successive tries of one side fetch.
const SIDE_FETCH_WAITS_MS: [i32; 5] = [10, 40, 160, 640, 2560];
/// Last Fetch version that names topics (v13 on use topic ids).
const FETCH_BY_NAME_VERSION: i16 = 12;

/// A running proxy. Dropping it stops the proxy and closes every connection.
pub struct KafkaProxy {
    pub port: u16,
    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub bootstrap: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Counters that tests use to check the proxy did its work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted and forwarded.
    pub connections: u64,
    /// Client connections open now.
    pub open: u64,
    /// Client connections closed at once because the proxy was down.
    pub refused: u64,
    /// Fetch responses forwarded.
    pub fetches: u64,
    /// Fetch responses whose `aborted_transactions` the proxy filled in.
    pub committed_fetches: u64,
    /// Aborted-transaction entries sent to clients, summed over responses.
    pub aborted_listed: u64,
    /// Fetch requests the proxy sent itself to find markers.
    pub read_aheads: u64,
    /// Batches of fenced epochs left out of read_committed responses
    /// (a correct broker would not have kept them).
    pub fenced_dropped: u64,
    /// Responses where tansu's stable offset passed a transaction without a
    /// marker (its records shown, as tansu shows them).
    pub marker_gaps: u64,
    /// AddPartitionsToTxn and EndTxn requests of fenced producers answered
    /// with PRODUCER_FENCED by the proxy.
    pub fenced_requests: u64,
}

impl KafkaProxy {
    /// Starts a proxy for the broker at `upstream` (`host:port`) on a free
    /// loopback port. Returns once the proxy listens.
    pub fn start(upstream: &str) -> KafkaProxy {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind proxy listener");
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let (faults, _) = watch::channel(Faults::default());
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            port,
            faults,
            logs: Mutex::new(HashMap::new()),
            side: tokio::sync::Mutex::new(None),
            ends: Mutex::new(HashMap::new()),
            errors: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            open: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            committed_fetches: AtomicU64::new(0),
            aborted_listed: AtomicU64::new(0),
            read_aheads: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            fenced_dropped: AtomicU64::new(0),
            producers: Mutex::new(HashMap::new()),
            fenced_requests: AtomicU64::new(0),
            cut_end_txn: AtomicU64::new(0),
            end_txn_cuts: AtomicU64::new(0),
        });
        let run = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("kafka-proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(accept_loop(run, listener));
                // Dropping the runtime drops every connection task and so
                // closes every socket.
            })
            .expect("proxy thread");
        KafkaProxy {
            port,
            bootstrap: format!("127.0.0.1:{port}"),
            shared,
            thread: Some(thread),
        }
    }

    /// Closes every open client and upstream connection now. New
    /// connections are accepted as usual.
    pub fn cut(&self) {
        self.shared.faults.send_modify(|f| f.generation += 1);
    }

    /// `true`: cuts every connection and closes each new one at once (with
    /// a reset), like a broker that is down. `false`: accepts again.
    pub fn set_down(&self, on: bool) {
        self.shared.faults.send_modify(|f| {
            if on && !f.down {
                f.generation += 1;
            }
            f.down = on;
        });
    }

    /// `true`: stops forwarding in both directions without closing anything;
    /// clients see requests time out. `false`: forwards what queued up.
    pub fn stall(&self, on: bool) {
        self.shared.faults.send_modify(|f| f.stalled = on);
    }

    /// Waits `d` before forwarding each frame, in both directions.
    pub fn set_delay(&self, d: Duration) {
        self.shared.faults.send_modify(|f| f.delay = d);
    }

    /// Swallows the response to each of the next `n` EndTxn requests
    /// (transaction commit or abort) and cuts every connection instead: the
    /// broker has acted on it, the client cannot know how it went.
    pub fn cut_at_end_txn(&self, n: u64) {
        self.shared.cut_end_txn.store(n, Ordering::SeqCst);
    }

    /// How many EndTxn responses [`KafkaProxy::cut_at_end_txn`] swallowed.
    pub fn end_txn_cuts(&self) -> u64 {
        self.shared.end_txn_cuts.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            connections: s.connections.load(Ordering::Relaxed),
            open: s.open.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            fetches: s.fetches.load(Ordering::Relaxed),
            committed_fetches: s.committed_fetches.load(Ordering::Relaxed),
            aborted_listed: s.aborted_listed.load(Ordering::Relaxed),
            read_aheads: s.read_aheads.load(Ordering::Relaxed),
            fenced_dropped: s.fenced_dropped.load(Ordering::Relaxed),
            fenced_requests: s.fenced_requests.load(Ordering::Relaxed),
            marker_gaps: s.gaps.load(Ordering::Relaxed),
        }
    }

    /// What the proxy could not do (undecodable frames, unresolved
    /// transactions). Tests assert this is empty.
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().expect("errors lock").clone()
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        self.shared.faults.send_modify(|f| f.shutdown = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Fault state, shared with every connection through a watch channel.
#[derive(Clone, Debug, Default)]
struct Faults {
    /// Bumped to cut every connection that started under an older value.
    generation: u64,
    down: bool,
    stalled: bool,
    delay: Duration,
    shutdown: bool,
}

struct Shared {
    upstream: String,
    port: u16,
    faults: watch::Sender<Faults>,
    /// Transaction index per partition; the inner lock serialises reading
    /// ahead in one partition.
    logs: Mutex<HashMap<PartitionKey, Arc<tokio::sync::Mutex<PartitionLog>>>>,
    /// The proxy's own connection to the broker for reading ahead.
    side: tokio::sync::Mutex<Option<SideConnection>>,
    /// Last high watermark seen per (topic name, partition), where the next
    /// end-offset Fetch starts.
    ends: Mutex<HashMap<(String, i32), i64>>,
    errors: Mutex<Vec<String>>,
    connections: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    fetches: AtomicU64,
    committed_fetches: AtomicU64,
    aborted_listed: AtomicU64,
    read_aheads: AtomicU64,
    /// Responses where the broker's stable offset passed a transaction
    /// without a marker.
    gaps: AtomicU64,
    /// Fenced batches left out of read_committed responses.
    fenced_dropped: AtomicU64,
    /// Per transactional id, the newest (producer id, epoch) the broker
    /// handed out.
    producers: Mutex<HashMap<String, (i64, i16)>>,
    fenced_requests: AtomicU64,
    /// EndTxn responses still to be swallowed (each followed by a cut).
    cut_end_txn: AtomicU64,
    /// EndTxn responses swallowed so far.
    end_txn_cuts: AtomicU64,
}

impl Shared {
    fn error(&self, what: String) {
        eprintln!("kafka proxy {}: {what}", self.port);
        self.errors.lock().expect("errors lock").push(what);
    }

    fn log(&self, key: &PartitionKey) -> Arc<tokio::sync::Mutex<PartitionLog>> {
        let mut logs = self.logs.lock().expect("logs lock");
        Arc::clone(logs.entry(key.clone()).or_default())
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: StdListener) {
    let listener = TcpListener::from_std(listener).expect("tokio proxy listener");
    let mut faults = shared.faults.subscribe();
    // Priority: shutdown first, then new connections.
    loop {
        let accepted = tokio::select! {
            biased;
            _ = faults.wait_for(|f| f.shutdown) => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            // Out of descriptors or similar: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if faults.borrow().down {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        shared.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(Arc::clone(&shared), client));
    }
}

/// What the response to one request needs from the request.
struct Pending {
    api_key: i16,
    version: i16,
    plan: Plan,
}

enum Plan {
    None,
    /// Isolation level and fetch offset per partition.
    Fetch {
        isolation_level: i8,
        offsets: HashMap<PartitionKey, i64>,
    },
    /// Isolation level and the partitions asked for their latest offset.
    ListOffsets {
        isolation_level: i8,
        latest: HashSet<(String, i32)>,
    },
    /// The producer's transactional id, to learn its newest epoch.
    InitProducerId {
        transactional_id: String,
    },
    /// A fenced producer's request, sent on as ApiVersions: the response
    /// frame's body to answer instead (after the correlation id header).
    Fenced {
        header_version: i16,
        body: Bytes,
    },
}

type PendingMap = Mutex<HashMap<i32, Pending>>;

/// One client connection and its upstream connection; ends when either
/// side closes, on a cut, or on shutdown, and then closes both.
async fn connection(shared: Arc<Shared>, client: TcpStream) {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&shared);
    let mut faults = shared.faults.subscribe();
    let generation = faults.borrow().generation;
    let upstream =
        match tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(&shared.upstream)).await {
            Ok(Ok(s)) => s,
            // The client sees its connection close, as with a dead broker.
            _ => return,
        };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (upstream_r, upstream_w) = upstream.into_split();
    let pending = PendingMap::default();
    // Priority: a cut or shutdown ends the connection whatever is in flight.
    tokio::select! {
        biased;
        _ = faults.wait_for(|f| f.generation != generation || f.shutdown) => {}
        _ = requests(&shared, client_r, upstream_w, &pending) => {}
        _ = responses(&shared, upstream_r, client_w, &pending) => {}
    }
}

/// Counts a connection as open while it lives (also when its task is
/// dropped at shutdown).
struct OpenGuard<'a>(&'a Shared);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Client → broker: note what each request needs for its response, then
/// forward it (a read_committed Fetch as read_uncommitted, see [`plan`]).
async fn requests(
    shared: &Shared,
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    pending: &PendingMap,
) {
    let mut faults = shared.faults.subscribe();
    while let Ok(Some(mut frame)) = read_frame(&mut from).await {
        if frame.len() >= 8 {
            let api_key = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let (plan, rewritten) = plan(shared, &frame, api_key, version).unwrap_or_else(|e| {
                shared.error(format!(
                    "cannot decode request to api {api_key} v{version}: {e}"
                ));
                (Plan::None, None)
            });
            if let Some(rewritten) = rewritten {
                frame = rewritten;
            }
            pending.lock().expect("pending lock").insert(
                correlation,
                Pending {
                    api_key,
                    version,
                    plan,
                },
            );
        }
        if !gate(&mut faults).await || write_frame(&mut to, &frame).await.is_err() {
            return;
        }
    }
}

/// Broker → client: rewrite the responses the proxy owns, forward the rest
/// unchanged, in order.
async fn responses(
    shared: &Shared,
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    pending: &PendingMap,
) {
    let mut faults = shared.faults.subscribe();
    while let Ok(Some(frame)) = read_frame(&mut from).await {
        let request = (frame.len() >= 4)
            .then(|| i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]))
            .and_then(|c| pending.lock().expect("pending lock").remove(&c));
        if request
            .as_ref()
            .is_some_and(|r| r.api_key == ApiKey::EndTxn as i16)
            && shared
                .cut_end_txn
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            shared.end_txn_cuts.fetch_add(1, Ordering::SeqCst);
            shared.faults.send_modify(|f| f.generation += 1);
            return;
        }
        let frame = match request {
            Some(request) => match rewrite(shared, &request, &frame).await {
                Ok(Some(rewritten)) => rewritten,
                Ok(None) => frame,
                Err(e) => {
                    shared.error(format!(
                        "cannot rewrite response to api {} v{}: {e}",
                        request.api_key, request.version
                    ));
                    frame
                }
            },
            None => frame,
        };
        if !gate(&mut faults).await || write_frame(&mut to, &frame).await.is_err() {
            return;
        }
    }
}

/// Holds a frame while the proxy is stalled and for the configured delay.
/// Returns `false` on shutdown.
async fn gate(faults: &mut watch::Receiver<Faults>) -> bool {
    let delay = match faults.wait_for(|f| !f.stalled || f.shutdown).await {
        Ok(f) if !f.shutdown => f.delay,
        _ => return false,
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    true
}

async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::try_from(i32::from_be_bytes(len))
        .ok()
        .filter(|&n| n <= MAX_FRAME_BYTES)
        .ok_or_else(|| std::io::Error::other("bad frame size"))?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(Bytes::from(buf)))
}

async fn write_frame(w: &mut (impl AsyncWrite + Unpin), frame: &[u8]) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(4 + frame.len());
    out.put_i32(i32::try_from(frame.len()).map_err(std::io::Error::other)?);
    out.put_slice(frame);
    w.write_all(&out).await
}

/// A partition as the Fetch version in use names its topic: by name before
/// v13, by topic id from v13 on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TopicKey {
    Name(String),
    Id([u8; 16]),
}

type PartitionKey = (TopicKey, i32);

fn topic_key(version: i16, name: &StrBytes, id: &[u8; 16]) -> TopicKey {
    if version >= 13 {
        TopicKey::Id(*id)
    } else {
        TopicKey::Name(name.as_str().to_owned())
    }
}

/// What the proxy must remember of a request to rewrite its response, and
/// the request to send instead when it is not forwarded as it is: a
/// read_committed Fetch goes to the broker as READ_UNCOMMITTED, because the
/// proxy, not tansu, decides where the stable part of each partition ends
/// (module docs).
fn plan(
    shared: &Shared,
    frame: &Bytes,
    api_key: i16,
    version: i16,
) -> anyhow::Result<(Plan, Option<Bytes>)> {
    let api = match ApiKey::try_from(api_key) {
        Ok(api @ (ApiKey::Fetch | ApiKey::ListOffsets)) => api,
        Ok(api @ (ApiKey::InitProducerId | ApiKey::EndTxn | ApiKey::AddPartitionsToTxn)) => {
            return plan_transactional(shared, frame, api, version);
        }
        _ => return Ok((Plan::None, None)),
    };
    let mut buf = frame.clone();
    let header_version = api.request_header_version(version);
    let header = RequestHeader::decode(&mut buf, header_version)?;
    if api == ApiKey::Fetch {
        let mut request = FetchRequest::decode(&mut buf, version)?;
        let mut offsets = HashMap::new();
        for t in &request.topics {
            let topic = topic_key(version, &t.topic.0, t.topic_id.as_bytes());
            for p in &t.partitions {
                offsets.insert((topic.clone(), p.partition), p.fetch_offset);
            }
        }
        let isolation_level = request.isolation_level;
        let rewritten = if isolation_level == READ_COMMITTED {
            request.isolation_level = 0;
            let mut out = BytesMut::new();
            header.encode(&mut out, header_version)?;
            request.encode(&mut out, version)?;
            Some(out.freeze())
        } else {
            None
        };
        return Ok((
            Plan::Fetch {
                isolation_level,
                offsets,
            },
            rewritten,
        ));
    }
    let request = ListOffsetsRequest::decode(&mut buf, version)?;
    let latest = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.timestamp == LATEST_TIMESTAMP)
                .map(|p| (t.name.0.as_str().to_owned(), p.partition_index))
        })
        .collect();
    Ok((
        Plan::ListOffsets {
            isolation_level: request.isolation_level,
            latest,
        },
        None,
    ))
}

/// Transactional requests: InitProducerId is remembered; AddPartitionsToTxn
/// (up to v3, what clients send) and EndTxn of a fenced producer are
/// answered with PRODUCER_FENCED (module docs).
fn plan_transactional(
    shared: &Shared,
    frame: &Bytes,
    api: ApiKey,
    version: i16,
) -> anyhow::Result<(Plan, Option<Bytes>)> {
    const PRODUCER_FENCED: i16 = 90;
    let mut buf = frame.clone();
    let header_version = api.request_header_version(version);
    let header = RequestHeader::decode(&mut buf, header_version)?;
    let fenced = |transactional_id: &str, producer_id: i64, epoch: i16| {
        shared
            .producers
            .lock()
            .expect("producers lock")
            .get(transactional_id)
            .is_some_and(|&newest| newest != (producer_id, epoch))
    };
    let mut body = BytesMut::new();
    match api {
        ApiKey::InitProducerId => {
            let request = InitProducerIdRequest::decode(&mut buf, version)?;
            return Ok((
                request
                    .transactional_id
                    .map_or(Plan::None, |t| Plan::InitProducerId {
                        transactional_id: t.0.as_str().to_owned(),
                    }),
                None,
            ));
        }
        ApiKey::EndTxn => {
            let request = EndTxnRequest::decode(&mut buf, version)?;
            if !fenced(
                request.transactional_id.0.as_str(),
                request.producer_id.0,
                request.producer_epoch,
            ) {
                return Ok((Plan::None, None));
            }
            let mut response = EndTxnResponse::default();
            response.error_code = PRODUCER_FENCED;
            response.encode(&mut body, version)?;
        }
        _ if version <= 3 => {
            let request = AddPartitionsToTxnRequest::decode(&mut buf, version)?;
            if !fenced(
                request.v3_and_below_transactional_id.0.as_str(),
                request.v3_and_below_producer_id.0,
                request.v3_and_below_producer_epoch,
            ) {
                return Ok((Plan::None, None));
            }
            let mut response = AddPartitionsToTxnResponse::default();
            response.results_by_topic_v3_and_below = request
                .v3_and_below_topics
                .iter()
                .map(|t| {
                    let mut result = AddPartitionsToTxnTopicResult::default();
                    result.name = t.name.clone();
                    result.results_by_partition = t
                        .partitions
                        .iter()
                        .map(|&p| {
                            let mut r = AddPartitionsToTxnPartitionResult::default();
                            r.partition_index = p;
                            r.partition_error_code = PRODUCER_FENCED;
                            r
                        })
                        .collect();
                    result
                })
                .collect();
            response.encode(&mut body, version)?;
        }
        _ => return Ok((Plan::None, None)),
    }
    shared.fenced_requests.fetch_add(1, Ordering::Relaxed);
    // ApiVersions v0 under the same correlation id: header v1, empty body.
    let mut instead = BytesMut::new();
    instead.put_i16(ApiKey::ApiVersions as i16);
    instead.put_i16(0);
    instead.put_i32(header.correlation_id);
    instead.put_i16(-1); // no client id
    Ok((
        Plan::Fenced {
            header_version: api.response_header_version(version),
            body: body.freeze(),
        },
        Some(instead.freeze()),
    ))
}

/// The rewritten response frame, or `None` to forward it unchanged.
async fn rewrite(
    shared: &Shared,
    request: &Pending,
    frame: &Bytes,
) -> anyhow::Result<Option<Bytes>> {
    let Ok(api) = ApiKey::try_from(request.api_key) else {
        return Ok(None);
    };
    let version = request.version;
    match &request.plan {
        Plan::Fenced {
            header_version,
            body,
        } => {
            let mut buf = frame.clone();
            let correlation_id = buf.get_i32();
            let mut out = BytesMut::new();
            let mut header = ResponseHeader::default();
            header.correlation_id = correlation_id;
            header.encode(&mut out, *header_version)?;
            out.extend_from_slice(body);
            return Ok(Some(out.freeze()));
        }
        Plan::InitProducerId { transactional_id } => {
            let mut buf = frame.clone();
            ResponseHeader::decode(&mut buf, api.response_header_version(version))?;
            let response = InitProducerIdResponse::decode(&mut buf, version)?;
            if response.error_code == 0 {
                shared.producers.lock().expect("producers lock").insert(
                    transactional_id.clone(),
                    (response.producer_id.0, response.producer_epoch),
                );
            }
            return Ok(None);
        }
        _ => {}
    }
    if !matches!(
        api,
        ApiKey::Metadata
            | ApiKey::FindCoordinator
            | ApiKey::DescribeCluster
            | ApiKey::Fetch
            | ApiKey::ListOffsets
    ) {
        return Ok(None);
    }
    let header_version = api.response_header_version(version);
    let mut buf = frame.clone();
    let header = ResponseHeader::decode(&mut buf, header_version)?;
    let host = StrBytes::from_static_str("127.0.0.1");
    let port = i32::from(shared.port);
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version)?;
    match api {
        ApiKey::Metadata => {
            let mut body = MetadataResponse::decode(&mut buf, version)?;
            if body.brokers.len() > 1 {
                shared.error(format!(
                    "broker advertises {} brokers, the proxy forwards to one",
                    body.brokers.len()
                ));
                body.brokers.truncate(1);
            }
            for b in &mut body.brokers {
                b.host = host.clone();
                b.port = port;
            }
            body.encode(&mut out, version)?;
        }
        ApiKey::FindCoordinator => {
            let mut body = FindCoordinatorResponse::decode(&mut buf, version)?;
            if version < 4 {
                if body.error_code == 0 {
                    body.host = host.clone();
                    body.port = port;
                }
            } else {
                for c in &mut body.coordinators {
                    if c.error_code == 0 {
                        c.host = host.clone();
                        c.port = port;
                    }
                }
            }
            body.encode(&mut out, version)?;
        }
        ApiKey::DescribeCluster => {
            let mut body = DescribeClusterResponse::decode(&mut buf, version)?;
            body.brokers.truncate(1);
            for b in &mut body.brokers {
                b.host = host.clone();
                b.port = port;
            }
            body.encode(&mut out, version)?;
        }
        ApiKey::Fetch => {
            shared.fetches.fetch_add(1, Ordering::Relaxed);
            let mut body = FetchResponse::decode(&mut buf, version)?;
            let changed = fill_aborted(shared, request, version, &mut body).await;
            let endpoints = !body.node_endpoints.is_empty();
            for e in &mut body.node_endpoints {
                e.host = host.clone();
                e.port = port;
            }
            if !changed && !endpoints {
                return Ok(None);
            }
            body.encode(&mut out, version)?;
        }
        ApiKey::ListOffsets => {
            let Plan::ListOffsets {
                isolation_level,
                latest,
            } = &request.plan
            else {
                return Ok(None);
            };
            if latest.is_empty() {
                return Ok(None);
            }
            let mut body = ListOffsetsResponse::decode(&mut buf, version)?;
            for t in &mut body.topics {
                let name = t.name.0.as_str().to_owned();
                for p in &mut t.partitions {
                    if p.error_code != 0 || !latest.contains(&(name.clone(), p.partition_index)) {
                        continue;
                    }
                    let end = end_offsets(shared, &t.name, p.partition_index)
                        .await
                        .map_err(|e| anyhow::anyhow!("{name}/{}: {e}", p.partition_index))?;
                    let high_watermark = end.high_watermark;
                    p.offset = if *isolation_level == READ_COMMITTED {
                        let key = (TopicKey::Name(name.clone()), p.partition_index);
                        let template = FetchTopic::default().with_topic(t.name.clone());
                        let log = shared.log(&key);
                        let mut log = log.lock().await;
                        log.read_to(
                            shared,
                            FETCH_BY_NAME_VERSION,
                            &template,
                            p.partition_index,
                            high_watermark,
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("{name}/{}: {e}", p.partition_index))?;
                        log.stable_with(high_watermark, end.last_stable, shared, &key)
                    } else {
                        high_watermark
                    };
                }
            }
            body.encode(&mut out, version)?;
        }
        _ => return Ok(None),
    }
    Ok(Some(out.freeze()))
}

/// Feeds every partition's records to the index and, for read_committed
/// requests, fills in `aborted_transactions`. Returns whether it changed
/// the response.
async fn fill_aborted(
    shared: &Shared,
    request: &Pending,
    version: i16,
    body: &mut FetchResponse,
) -> bool {
    let (read_committed, offsets) = match &request.plan {
        Plan::Fetch {
            isolation_level,
            offsets,
        } => (*isolation_level == READ_COMMITTED, Some(offsets)),
        _ => (false, None),
    };
    let mut changed = false;
    for topic in &mut body.responses {
        let key = topic_key(version, &topic.topic.0, topic.topic_id.as_bytes());
        // The read-ahead request names the topic the way this response does.
        let template = FetchTopic::default()
            .with_topic(topic.topic.clone())
            .with_topic_id(topic.topic_id);
        for data in &mut topic.partitions {
            if data.error_code != 0 {
                continue;
            }
            let pkey = (key.clone(), data.partition_index);
            let batches = match data.records.as_ref().map(split_batches) {
                None => Vec::new(),
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    shared.error(format!("{pkey:?}: cannot read fetched records: {e}"));
                    continue;
                }
            };
            let log = shared.log(&pkey);
            let mut log = log.lock().await;
            log.ingest_forwarded(&batches);
            if !read_committed {
                continue;
            }
            // The broker was asked READ_UNCOMMITTED: show only what lies
            // below the stable offset, computed from the log's markers.
            let high_watermark = data.high_watermark;
            if let Err(e) = log
                .read_to(
                    shared,
                    version,
                    &template,
                    data.partition_index,
                    high_watermark,
                )
                .await
            {
                shared.error(format!("{pkey:?}: {e}"));
            }
            let stable = log.stable_with(high_watermark, data.last_stable_offset, shared, &pkey);
            data.last_stable_offset = stable;
            changed = true;
            // Below the stable offset, without the batches a correct broker
            // would not have kept.
            let mut kept: Vec<&Batch> = Vec::new();
            if let Some(records) = &data.records {
                let mut out = BytesMut::new();
                let mut at = 0;
                for b in &batches {
                    if b.base < stable {
                        if log.fenced.contains(&b.base) {
                            shared.fenced_dropped.fetch_add(1, Ordering::Relaxed);
                        } else {
                            out.extend_from_slice(&records[at..at + b.size]);
                            kept.push(b);
                        }
                    }
                    at += b.size;
                }
                if kept.len() < batches.len() {
                    data.records = Some(out.freeze());
                }
            }
            let (Some(first), Some(last)) = (kept.first(), kept.last()) else {
                data.aborted_transactions = Some(Vec::new());
                continue;
            };
            // The first batch returned holds the fetch offset, so without a
            // known request offset (fetch sessions) its base offset selects
            // the same transactions.
            let fetch_offset = offsets
                .and_then(|o| o.get(&pkey).copied())
                .unwrap_or(first.base);
            let aborted = log.aborted_overlapping(fetch_offset, last.next());
            shared.committed_fetches.fetch_add(1, Ordering::Relaxed);
            shared
                .aborted_listed
                .fetch_add(aborted.len() as u64, Ordering::Relaxed);
            data.aborted_transactions = Some(
                aborted
                    .into_iter()
                    .map(|a| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(a.producer_id))
                            .with_first_offset(a.first_offset)
                    })
                    .collect(),
            );
        }
    }
    changed
}

/// The header facts of one complete record batch. Public, like
/// [`PartitionLog`], so tests/kafka_proxy.rs can check the index without a
/// broker.
#[derive(Clone, Debug)]
pub struct Batch {
    pub base: i64,
    /// Offset of the batch's last record.
    pub last: i64,
    pub producer_id: i64,
    pub transactional: bool,
    /// For control batches: whether the marker is an ABORT.
    pub abort_marker: Option<bool>,
    /// Its length in the records bytes (header included).
    pub size: usize,
    pub producer_epoch: i16,
}

impl Batch {
    pub fn next(&self) -> i64 {
        self.last + 1
    }
}

/// Splits a partition's record bytes into complete v2 batches. A trailing
/// partial batch (the broker may cut the last one at the size limit) is
/// dropped, as clients drop it.
pub fn split_batches(records: &Bytes) -> anyhow::Result<Vec<Batch>> {
    const HEADER: usize = 61;
    let mut rest = records.clone();
    let mut out = Vec::new();
    while rest.len() >= 12 {
        let base = i64::from_be_bytes(rest[0..8].try_into().expect("8 bytes"));
        let len = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        let len = usize::try_from(len).map_err(|_| anyhow::anyhow!("negative batch length"))?;
        if rest.len() < 12 + len {
            break;
        }
        let one = rest.split_to(12 + len);
        anyhow::ensure!(
            one.len() >= HEADER,
            "batch at {base} is shorter than its header"
        );
        anyhow::ensure!(
            one[16] == 2,
            "batch at {base} has message format v{}",
            one[16]
        );
        let last_delta = i32::from_be_bytes(one[23..27].try_into().expect("4 bytes"));
        let info = RecordBatchDecoder::decode_batch_info(&mut one.clone())?;
        let [info] = info.as_slice() else {
            anyhow::bail!("batch at {base} decodes as {} batches", info.len());
        };
        let abort_marker = if info.control {
            let set = RecordBatchDecoder::decode(&mut one.clone())?;
            let record = set
                .records
                .first()
                .ok_or_else(|| anyhow::anyhow!("control batch at {base} has no record"))?;
            let mut key = record
                .key
                .clone()
                .ok_or_else(|| anyhow::anyhow!("control record at {base} has no key"))?;
            anyhow::ensure!(key.len() >= 4, "control record key at {base} is too short");
            let _version = key.get_i16();
            Some(key.get_i16() == CONTROL_ABORT)
        } else {
            None
        };
        out.push(Batch {
            base,
            last: base + i64::from(last_delta),
            producer_id: info.producer_id,
            transactional: info.transactional,
            abort_marker,
            size: 12 + len,
            producer_epoch: info.producer_epoch,
        });
    }
    Ok(out)
}

/// An aborted transaction of one producer in one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aborted {
    pub producer_id: i64,
    /// Offset of the transaction's first data batch.
    pub first_offset: i64,
    /// Offset of its ABORT marker.
    pub marker_offset: i64,
}

/// What the proxy knows of one partition's log, read in offset order.
#[derive(Debug, Default)]
pub struct PartitionLog {
    /// Next offset to read: everything below it has been seen.
    pub next: i64,
    /// Transactions without a marker yet: producer id → first data offset.
    open: HashMap<i64, i64>,
    /// Per producer id: the newest epoch seen, and the epoch and data
    /// batches (base offsets) of its open transaction.
    epochs: HashMap<i64, i16>,
    open_batches: HashMap<i64, (i16, Vec<i64>)>,
    /// Base offsets of data batches a correct broker would not have kept:
    /// written with an epoch older than one the producer id already used,
    /// or left open by an epoch that a newer one replaced (the broker
    /// aborts that transaction when the new epoch begins).
    pub fenced: HashSet<i64>,
    /// Aborted transactions in marker order (so by `marker_offset`).
    aborted: VecDeque<Aborted>,
}

impl PartitionLog {
    /// Takes the batches of a forwarded response that continue the log
    /// exactly where the index stopped; a response starting further on
    /// leaves a gap that only a read-ahead from `next` may fill.
    pub fn ingest_forwarded(&mut self, batches: &[Batch]) {
        for b in batches {
            if b.last < self.next {
                continue;
            }
            if b.base > self.next {
                return;
            }
            self.ingest(b);
        }
    }

    pub fn ingest(&mut self, b: &Batch) {
        self.next = self.next.max(b.next());
        if b.transactional {
            let newest = self.epochs.entry(b.producer_id).or_insert(b.producer_epoch);
            if b.producer_epoch < *newest {
                // A zombie's write that arrived after its successor began.
                if b.abort_marker.is_none() {
                    self.fenced.insert(b.base);
                }
                return;
            }
            if b.producer_epoch > *newest {
                *newest = b.producer_epoch;
                // The successor began: the old epoch's open transaction is
                // over, as if aborted.
                if let Some((epoch, batches)) = self.open_batches.remove(&b.producer_id)
                    && epoch < b.producer_epoch
                {
                    self.fenced.extend(batches);
                    self.open.remove(&b.producer_id);
                }
            }
        }
        match b.abort_marker {
            Some(abort) => {
                self.open_batches.remove(&b.producer_id);
                if let Some(first_offset) = self.open.remove(&b.producer_id)
                    && abort
                {
                    self.aborted.push_back(Aborted {
                        producer_id: b.producer_id,
                        first_offset,
                        marker_offset: b.base,
                    });
                }
            }
            None if b.transactional => {
                self.open.entry(b.producer_id).or_insert(b.base);
                self.open_batches
                    .entry(b.producer_id)
                    .or_insert_with(|| (b.producer_epoch, Vec::new()))
                    .1
                    .push(b.base);
            }
            None => {}
        }
    }

    /// The last stable offset as a correct broker computes it: the first
    /// offset of the oldest transaction without a marker, or the end of
    /// what the index has read (at most `high_watermark`) when none is open.
    pub fn stable(&self, high_watermark: i64) -> i64 {
        self.open
            .values()
            .copied()
            .min()
            .unwrap_or(self.next)
            .min(self.next)
            .min(high_watermark)
    }

    /// The stable offset to report, given the broker's own
    /// (`broker_stable`): the index's, except past a transaction the broker
    /// considers ended but left without a marker (tansu sometimes loses
    /// one; its records are then shown, as tansu shows them). Says so when
    /// that happens.
    fn stable_with(
        &self,
        high_watermark: i64,
        broker_stable: i64,
        shared: &Shared,
        key: &PartitionKey,
    ) -> i64 {
        let own = self.stable(high_watermark);
        if broker_stable > own {
            shared.gaps.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "kafka proxy {}: {key:?}: the broker's stable offset {broker_stable} is past \
                 transactions without a marker {:?} (producer id → first offset)",
                shared.port, self.open
            );
            return broker_stable.min(high_watermark);
        }
        own
    }

    /// Reads ahead with the proxy's own READ_UNCOMMITTED Fetch requests
    /// until the index has seen the log up to `high_watermark`.
    async fn read_to(
        &mut self,
        shared: &Shared,
        version: i16,
        topic: &FetchTopic,
        partition: i32,
        high_watermark: i64,
    ) -> Result<(), String> {
        for _ in 0..MAX_READ_AHEADS {
            if self.next >= high_watermark {
                return Ok(());
            }
            shared.read_aheads.fetch_add(1, Ordering::Relaxed);
            let data = side_fetch(shared, version, topic, partition, self.next).await?;
            if data.error_code == OFFSET_OUT_OF_RANGE && data.log_start_offset > self.next {
                self.next = data.log_start_offset;
                continue;
            }
            if data.error_code != 0 {
                return Err(format!(
                    "read-ahead at {} failed with error {}",
                    self.next, data.error_code
                ));
            }
            let batches = match data.records.as_ref().map(split_batches) {
                None => Vec::new(),
                Some(r) => r.map_err(|e| format!("cannot read records read ahead: {e}"))?,
            };
            if batches.is_empty() {
                return Err(format!(
                    "read-ahead at {} found no records below the high watermark {}",
                    self.next, data.high_watermark
                ));
            }
            for b in &batches {
                if b.last >= self.next {
                    self.ingest(b);
                }
            }
        }
        Err(format!(
            "log not read to {high_watermark} after {MAX_READ_AHEADS} read-aheads"
        ))
    }

    /// Aborted transactions a fetch from `fetch_offset` whose records end
    /// before `upper` must list: data below `upper`, marker not before the
    /// fetch offset. Sorted by first offset.
    pub fn aborted_overlapping(&self, fetch_offset: i64, upper: i64) -> Vec<Aborted> {
        let mut out: Vec<Aborted> = self
            .aborted
            .iter()
            .filter(|a| a.marker_offset >= fetch_offset && a.first_offset < upper)
            .copied()
            .collect();
        out.sort_by_key(|a| a.first_offset);
        out
    }
}

/// The proxy's own connection to the broker, for reading ahead.
struct SideConnection {
    stream: TcpStream,
    correlation: i32,
}

/// A partition's ends as the broker's Fetch reports them.
struct EndOffsets {
    high_watermark: i64,
    last_stable: i64,
}

/// The high watermark and last stable offset of a partition, from a Fetch
/// at the last high watermark seen (so it carries few records).
async fn end_offsets(
    shared: &Shared,
    topic: &TopicName,
    partition: i32,
) -> Result<EndOffsets, String> {
    let key = (topic.0.as_str().to_owned(), partition);
    let template = FetchTopic::default().with_topic(topic.clone());
    let mut from = shared
        .ends
        .lock()
        .expect("ends lock")
        .get(&key)
        .copied()
        .unwrap_or(0);
    for _ in 0..2 {
        let data = side_fetch(shared, FETCH_BY_NAME_VERSION, &template, partition, from).await?;
        if data.error_code == OFFSET_OUT_OF_RANGE && from > 0 {
            from = 0;
            continue;
        }
        if data.error_code != 0 {
            return Err(format!(
                "fetch for end offsets failed with error {}",
                data.error_code
            ));
        }
        shared
            .ends
            .lock()
            .expect("ends lock")
            .insert(key, data.high_watermark);
        return Ok(EndOffsets {
            high_watermark: data.high_watermark,
            last_stable: data.last_stable_offset,
        });
    }
    Err("fetch for end offsets out of range from offset 0".to_owned())
}

/// One READ_UNCOMMITTED Fetch of `partition` from `offset`, on the side
/// connection (reconnected if it broke).
///
/// tansu answers a Fetch with what it gathered within `max_wait_ms`, even
/// with `min_bytes` 0: with no wait the partition is missing from the
/// response. So ask with a short wait (`min_bytes` 1 returns as soon as
/// there are records) and wait longer while the partition is missing.
async fn side_fetch(
    shared: &Shared,
    version: i16,
    topic: &FetchTopic,
    partition: i32,
    offset: i64,
) -> Result<PartitionData, String> {
    let mut side = shared.side.lock().await;
    let mut last_error = String::new();
    let mut empty = None;
    for max_wait_ms in SIDE_FETCH_WAITS_MS {
        let request = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(READ_AHEAD_BYTES)
            .with_isolation_level(0)
            .with_topics(vec![topic.clone().with_partitions(vec![
                FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(READ_AHEAD_BYTES),
            ])]);
        if side.is_none() {
            match tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(&shared.upstream)).await
            {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    *side = Some(SideConnection {
                        stream,
                        correlation: 0,
                    });
                }
                Ok(Err(e)) => return Err(format!("side fetch cannot connect: {e}")),
                Err(_) => return Err("side fetch connect timed out".to_owned()),
            }
        }
        let conn = side.as_mut().expect("invariant: connected above");
        match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange(conn, version, &request)).await {
            Ok(Ok(response)) => {
                let found = response
                    .responses
                    .into_iter()
                    .flat_map(|t| t.partitions)
                    .find(|p| p.partition_index == partition);
                match found {
                    // A busy tansu may also answer with the partition but
                    // no records yet, although records exist below the
                    // high watermark: ask again with a longer wait.
                    Some(data)
                        if offset < data.high_watermark
                            && data.records.as_ref().is_none_or(|r| r.is_empty()) =>
                    {
                        empty = Some(data);
                    }
                    Some(data) => return Ok(data),
                    None => last_error = format!("side fetch response lacks partition {partition}"),
                }
                continue;
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "side fetch timed out".to_owned(),
        }
        *side = None;
    }
    empty.ok_or(last_error)
}

async fn exchange(
    conn: &mut SideConnection,
    version: i16,
    request: &FetchRequest,
) -> anyhow::Result<FetchResponse> {
    conn.correlation = conn.correlation.wrapping_add(1);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(version)
        .with_correlation_id(conn.correlation)
        .with_client_id(Some(StrBytes::from_static_str("siphon-test-proxy")));
    let mut frame = BytesMut::new();
    header.encode(&mut frame, ApiKey::Fetch.request_header_version(version))?;
    request.encode(&mut frame, version)?;
    write_frame(&mut conn.stream, &frame).await?;
    let mut response = read_frame(&mut conn.stream)
        .await?
        .ok_or_else(|| anyhow::anyhow!("broker closed the read-ahead connection"))?;
    let header = ResponseHeader::decode(
        &mut response,
        ApiKey::Fetch.response_header_version(version),
    )?;
    anyhow::ensure!(
        header.correlation_id == conn.correlation,
        "read-ahead correlation id {} != {}",
        header.correlation_id,
        conn.correlation
    );
    FetchResponse::decode(&mut response, version)
}

/// What a raw log says of the transaction holding `offset`: its batch's
/// producer id and epoch, the same producer's last marker before it, the
/// marker that ends it and the producer's other data batches in between.
/// For diagnosing a record read twice.
#[allow(dead_code)]
pub fn explain_offset(log: &[RawBatch], offset: i64) -> String {
    let Some(at) = log
        .iter()
        .position(|b| b.batch.base <= offset && offset <= b.batch.last)
    else {
        return "not in the raw log".to_owned();
    };
    let own = &log[at];
    let pid = own.batch.producer_id;
    let describe = |b: &RawBatch| {
        let kind = match b.batch.abort_marker {
            None => "data",
            Some(true) => "ABORT",
            Some(false) => "COMMIT",
        };
        format!(
            "{kind} {}-{} epoch {}",
            b.batch.base, b.batch.last, b.producer_epoch
        )
    };
    let same = |b: &&RawBatch| b.batch.producer_id == pid;
    let before = log[..at]
        .iter()
        .rev()
        .filter(same)
        .find(|b| b.batch.abort_marker.is_some())
        .map(describe)
        .unwrap_or_else(|| "none".to_owned());
    let mut between = Vec::new();
    let mut end = "none (open)".to_owned();
    for b in log[at + 1..].iter().filter(same) {
        if b.batch.abort_marker.is_some() {
            end = describe(b);
            break;
        }
        between.push(describe(b));
    }
    let shown = between.len().min(4);
    format!(
        "batch {} pid {pid}; previous marker {before}; ended by {end}; {} more data batches of \
         the producer before that (first {:?})",
        describe(own),
        between.len(),
        &between[..shown]
    )
}

/// One batch of a partition's raw log, with its producer epoch.
#[derive(Clone, Debug)]
pub struct RawBatch {
    pub batch: Batch,
    pub producer_epoch: i16,
}

/// Reads a partition's whole raw log (READ_UNCOMMITTED, control batches
/// included) straight from `broker`, batch by batch: which records and
/// markers the broker kept, by which producer id and epoch. For
/// diagnosing what a broker kept across its restarts.
#[allow(dead_code)]
pub fn raw_log(broker: &str, topic: &str, partition: i32) -> anyhow::Result<Vec<RawBatch>> {
    // Its own thread and runtime: callable from async tests too.
    std::thread::scope(|scope| {
        scope
            .spawn(|| raw_log_blocking(broker, topic, partition))
            .join()
            .map_err(|_| anyhow::anyhow!("the raw-log reader panicked"))?
    })
}

fn raw_log_blocking(broker: &str, topic: &str, partition: i32) -> anyhow::Result<Vec<RawBatch>> {
    const VERSION: i16 = 11;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stream = TcpStream::connect(broker).await?;
        let mut conn = SideConnection {
            stream,
            correlation: 0,
        };
        let mut out: Vec<RawBatch> = Vec::new();
        let mut offset = 0i64;
        loop {
            let request = FetchRequest::default()
                .with_max_wait_ms(100)
                .with_min_bytes(1)
                .with_max_bytes(READ_AHEAD_BYTES)
                .with_isolation_level(0)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(READ_AHEAD_BYTES),
                        ]),
                ]);
            let response = exchange(&mut conn, VERSION, &request).await?;
            let data = response
                .responses
                .into_iter()
                .flat_map(|t| t.partitions)
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| anyhow::anyhow!("no partition {partition} in the response"))?;
            anyhow::ensure!(
                data.error_code == 0,
                "fetch at {offset} failed with error {}",
                data.error_code
            );
            let mut rest = data.records.unwrap_or_default();
            let before = out.len();
            while rest.len() >= 12 {
                let len = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
                let len = usize::try_from(len)?;
                if rest.len() < 12 + len {
                    break;
                }
                let one = rest.split_to(12 + len);
                let [batch] = split_batches(&one)?.try_into().map_err(|_| {
                    anyhow::anyhow!("one batch's bytes did not split into one batch")
                })?;
                let info = RecordBatchDecoder::decode_batch_info(&mut one.clone())?;
                let producer_epoch = info.first().map(|i| i.producer_epoch).unwrap_or(-1);
                if batch.last >= offset {
                    offset = batch.next();
                    out.push(RawBatch {
                        batch,
                        producer_epoch,
                    });
                }
            }
            if out.len() == before {
                return Ok(out);
            }
        }
    })
}
