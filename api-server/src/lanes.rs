//! The public port served by lanes: one single-threaded Tokio runtime per thread, fed by one
//! listener. [`crate::redis::Redis`] gives each lane a connection of its own.
//!
//! Why: on the multi-threaded runtime a request's task, the Redis connection's I/O task and the
//! connection's next request kept landing on different workers, and each hand-over woke the other
//! thread (futex, context switch). Serving a connection, its requests and their Redis round trips
//! on one thread cut the server's CPU per cache-hit GET by about a quarter (docs/benchmarks.md).
//!
//! One accept loop hands each new connection to the lane with the fewest open ones. A lane keeps
//! a connection for its life (no work stealing), which is the price; behind a load balancer the
//! connections are many and similar. A single listener keeps shutdown as it was: with a
//! `SO_REUSEPORT` listener per lane, connections waiting in a closing listener's backlog would be
//! reset instead of served.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::serve::{Listener, ListenerExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::shutdown;

thread_local! {
    static LANE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The lane the calling thread serves, if it is a lane's thread.
pub fn current() -> Option<usize> {
    LANE.get()
}

/// How many lanes `configured` means: itself, or one per CPU available to the process (which
/// honours a container's CPU quota) when 0.
pub fn count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Serves a router `router()` builds for each lane on `listener` with `lanes` lanes until
/// `stop` turns true (each lane keeps a timer due within `tick`: see `keep_a_timer_due`),
/// then stops accepting and returns once every lane's connections have finished. The lanes'
/// runtimes keep running until the returned [`Parked`] is dropped: tasks started on a lane (the
/// job queue's committer, a Redis connection reopened there after a failover) may still serve
/// the main runtime and the other lanes.
pub async fn serve(
    listener: TcpListener,
    router: impl Fn() -> Router,
    lanes: usize,
    tick: Duration,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Parked> {
    let local = listener.local_addr()?;
    let mut started = Vec::with_capacity(lanes);
    let mut parked = Parked(Vec::with_capacity(lanes));
    for lane in 0..lanes {
        let (lane, release) = Lane::start(lane, local, router(), tick)?;
        started.push(lane);
        parked.0.push(release);
    }
    let stopped = shutdown::stopped(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => hand_over(&started, stream, peer)?,
                Err(e) if is_connection_error(&e) => {}
                // Out of file descriptors and the like: pause rather than spin.
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    drop(listener);
    // Every lane starts draining at once (closing its queue lets it take what was handed over,
    // then its graceful shutdown begins); then wait for all of them. As with a plain
    // `axum::serve`, a connection whose first request has not arrived by then is closed
    // unanswered; the drain period before `stop` (readiness false, `Connection: close`) is
    // what keeps clients from opening new ones now.
    let (queues, done): (Vec<_>, Vec<_>) = started
        .into_iter()
        .map(|l| (l.queue, (l.index, l.done)))
        .unzip();
    drop(queues);
    let mut failed = None;
    for (index, done) in done {
        let result = match done.await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "lane {index} ended without a result (it panicked, or its runtime did not start)"
            )),
        };
        if let Err(e) = result {
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(parked), Err)
}

/// Lanes whose servers have finished, still running their runtimes' other tasks; dropping it
/// lets their threads end.
pub struct Parked(Vec<oneshot::Sender<()>>);

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The accept loop's end of a lane.
struct Lane {
    index: usize,
    queue: mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    /// Connections handed over and not yet closed.
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<anyhow::Result<()>>,
}

impl Lane {
    fn start(
        index: usize,
        local: SocketAddr,
        router: Router,
        tick: Duration,
    ) -> io::Result<(Self, oneshot::Sender<()>)> {
        let (queue, incoming) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let (done_tx, done) = oneshot::channel();
        let (release, released) = oneshot::channel::<()>();
        let (drained_tx, drained) = oneshot::channel();
        let listener = LaneListener {
            incoming,
            open: open.clone(),
            local,
            drained: Some(drained_tx),
        };
        let lane = async move {
            tokio::spawn(keep_a_timer_due(tick));
            let result = listener.serve(index, router, drained).await;
            if let Err(e) = &result {
                tracing::error!(lane = index, error = %format_args!("{e:#}"), "lane stopped");
            }
            let _ = done_tx.send(result);
            let _ = released.await;
        };
        std::thread::Builder::new()
            .name(format!("api-lane-{index}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        LANE.set(Some(index));
                        runtime.block_on(lane);
                    }
                    // `done` reports the lane gone; `serve` fails on the first connection.
                    Err(e) => {
                        tracing::error!(lane = index, error = %e, "building a lane's runtime")
                    }
                }
            })?;
        let lane = Self {
            index,
            queue,
            open,
            done,
        };
        Ok((lane, release))
    }
}

/// Keeps a timer due within `period` on the calling runtime, for ever.
///
/// Tokio's time driver wakes itself (an `eventfd` write, then one more `epoll_wait`) whenever a
/// timer is registered that is due before the driver's next planned wake-up. Each request on a
/// lane starts Redis call timeouts shorter than the request timeouts already pending, so nearly
/// every Redis call did that: 0.43 `write(2)` per cache-hit GET under wrk. With a timer always
/// due within `period`, half the shortest per-call timeout, no new timer is due earlier than
/// the planned wake-up; the cost is one wake-up per `period` when idle.
async fn keep_a_timer_due(period: Duration) {
    // `interval` panics on a zero period.
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Gives a new connection to the running lane with the fewest open connections. A lane whose
/// server has ended (it cannot, short of a bug) gets no more; with none left serving, the
/// server stops with an error rather than accept connections it would drop.
fn hand_over(lanes: &[Lane], stream: TcpStream, peer: SocketAddr) -> anyhow::Result<()> {
    // A tokio stream belongs to its runtime's reactor; the lane registers it with its own.
    let mut connection = match stream.into_std() {
        Ok(stream) => (stream, peer),
        Err(e) => {
            tracing::warn!(error = %e, "accepted connection unusable");
            return Ok(());
        }
    };
    loop {
        let lane = lanes
            .iter()
            .filter(|l| !l.queue.is_closed())
            .min_by_key(|l| l.open.load(Ordering::Relaxed))
            .context("every lane has stopped serving")?;
        // Counted before the lane can see (and close) it.
        lane.open.fetch_add(1, Ordering::Relaxed);
        match lane.queue.send(connection) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::SendError(back)) => {
                lane.open.fetch_sub(1, Ordering::Relaxed);
                tracing::error!(
                    lane = lane.index,
                    "lane stopped serving; its share goes to the others"
                );
                connection = back;
            }
        }
    }
}

/// A lane's end: what `axum::serve` accepts connections from.
struct LaneListener {
    incoming: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    open: Arc<AtomicUsize>,
    local: SocketAddr,
    /// Told when the accept loop has closed the queue and everything in it was taken.
    drained: Option<oneshot::Sender<()>>,
}

impl LaneListener {
    async fn serve(
        self,
        index: usize,
        router: Router,
        drained: oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        // `tap_io` only to get axum's `ConnectInfo<SocketAddr>` for a listener of our own.
        let listener = self.tap_io(|_| {});
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = drained.await;
        })
        .await
        .with_context(|| format!("lane {index}"))
    }
}

impl Listener for LaneListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some((stream, peer)) = self.incoming.recv().await else {
                if let Some(drained) = self.drained.take() {
                    let _ = drained.send(());
                }
                // The graceful shutdown just signalled stops asking for more.
                return std::future::pending().await;
            };
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    let open = self.open.clone();
                    return (Counted { stream, open }, peer);
                }
                Err(e) => {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "registering a connection failed");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A connection that takes itself off its lane's count when dropped.
pub struct Counted {
    stream: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counted {
    fn stream(self: Pin<&mut Self>) -> Pin<&mut TcpStream> {
        Pin::new(&mut self.get_mut().stream)
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    // hyper writes headers and body with one writev only when the stream says it can.
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(
        index: usize,
        open: usize,
    ) -> (
        Lane,
        mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    ) {
        let (queue, incoming) = mpsc::unbounded_channel();
        let (_, done) = oneshot::channel();
        let lane = Lane {
            index,
            queue,
            open: Arc::new(AtomicUsize::new(open)),
            done,
        };
        (lane, incoming)
    }

    async fn accepted(listener: &TcpListener) -> (TcpStream, SocketAddr) {
        let addr = listener.local_addr().expect("bound");
        let (accepted, _client) = tokio::join!(listener.accept(), TcpStream::connect(addr));
        accepted.expect("accepted")
    }

    #[tokio::test]
    async fn a_stopped_lane_gets_no_connections_and_none_left_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        // Lane 0 has the fewest connections but has stopped (its receiver is gone).
        let (stopped, gone) = lane(0, 0);
        let (busy, mut incoming) = lane(1, 5);
        drop(gone);
        let lanes = [stopped, busy];

        let (stream, peer) = accepted(&listener).await;
        hand_over(&lanes, stream, peer).expect("handed to lane 1");
        let (_, got) = incoming.try_recv().expect("lane 1 got it");
        assert_eq!(got, peer);
        assert_eq!(lanes[0].open.load(Ordering::Relaxed), 0);
        assert_eq!(lanes[1].open.load(Ordering::Relaxed), 6);

        drop(incoming);
        let (stream, peer) = accepted(&listener).await;
        let err = hand_over(&lanes, stream, peer).expect_err("no lane serving");
        assert_eq!(err.to_string(), "every lane has stopped serving");
        assert_eq!(lanes[1].open.load(Ordering::Relaxed), 6);
    }
}
