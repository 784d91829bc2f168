//! The public port's lanes (`api_server::lanes`) on a real socket and a real Redis: where
//! connections go, that each lane opens its own Redis connection (`api_server::redis`), and
//! that stopping finishes the request in flight before `serve` returns.

use std::net::SocketAddr;
use std::time::Duration;

use api_server::lanes;
use api_server::observability::Metrics;
use api_server::redis::Redis;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which lane and thread served the request, after a Redis round trip from there.
async fn where_served(State(redis): State<Redis>) -> String {
    let ping = redis.ping().await.map_or("redis down", |()| "redis up");
    let thread = std::thread::current();
    format!(
        "{:?} {} {ping}",
        lanes::current(),
        thread.name().unwrap_or("unnamed")
    )
}

/// Longer than the test gives the lanes to start draining after the stop.
const SLOW: Duration = Duration::from_secs(3);

async fn slow() -> &'static str {
    tokio::time::sleep(SLOW).await;
    "done"
}

/// A client that keeps its one connection between requests.
fn one_connection_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client")
}

/// One keep-alive HTTP/1.1 connection, spoken by hand: a pooled client opens a second connection
/// when its first is not back in the pool yet (seen under load), which would put a "connection"
/// on two lanes.
struct Connection(TcpStream);

impl Connection {
    async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self(TcpStream::connect(addr).await?))
    }

    /// The body of `GET path` on this connection; an error once the server has closed it.
    async fn get(&mut self, path: &str) -> anyhow::Result<String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: lanes\r\n\r\n");
        self.0.write_all(request.as_bytes()).await?;
        let mut received = Vec::new();
        loop {
            if let Some(head_end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&received[..head_end])?.to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .ok_or_else(|| anyhow::anyhow!("no content-length in {head}"))?
                    .trim()
                    .parse()?;
                let body = head_end + 4;
                if received.len() >= body + length {
                    return Ok(String::from_utf8(received[body..body + length].to_vec())?);
                }
            }
            if self.0.read_buf(&mut received).await? == 0 {
                anyhow::bail!("connection closed");
            }
        }
    }
}

async fn connected_clients(url: &str) -> anyhow::Result<usize> {
    let mut c = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut c).await?;
    // Not counting this connection.
    Ok(list.lines().count() - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_spread_connections_keep_them_and_drain_on_stop() -> anyhow::Result<()> {
    let server = testenv::RedisServer::start().await?;
    let endpoint = platform::config::RedisEndpoint::Url {
        url: server.url(),
        auth: Default::default(),
    };
    let redis = Redis::connect(&endpoint, Duration::from_secs(1), Metrics::new())
        .await?
        .with_lanes(2);
    let state = redis.clone();
    let router = move || {
        Router::new()
            .route("/where", get(where_served))
            .route("/slow", get(slow))
            .with_state(state.clone())
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let serving = tokio::spawn(lanes::serve(
        listener,
        router,
        2,
        Duration::from_millis(500),
        stopped,
    ));

    // Four connections, opened one after another: the fewest-open rule alternates them, and
    // each stays on its lane for every request it carries.
    let mut held = Vec::new();
    let mut served = Vec::new();
    for _ in 0..4 {
        let mut connection = Connection::open(addr).await?;
        let first = connection.get("/where").await?;
        let second = connection.get("/where").await?;
        assert_eq!(first, second, "a connection stays on its lane");
        served.push(first);
        held.push(connection);
    }
    assert_eq!(
        served,
        [
            "Some(0) api-lane-0 redis up",
            "Some(1) api-lane-1 redis up",
            "Some(0) api-lane-0 redis up",
            "Some(1) api-lane-1 redis up",
        ]
    );
    // Each lane's first call opened its own connection: the shared one plus one per lane.
    let mut clients = 0;
    for _ in 0..50 {
        clients = connected_clients(&server.url()).await?;
        if clients == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(clients, 3, "shared + 2 lane connections to Redis");

    // Stop with a request in flight (on lane 0, which ties with lane 1 at two connections): it
    // finishes, and meanwhile every lane drains at once, so the idle keep-alive connections of
    // both lanes are closed and a new request on them finds no server.
    let slow_client = one_connection_client();
    let in_flight = tokio::spawn(async move {
        let r = slow_client
            .get(format!("http://{addr}/slow"))
            .send()
            .await?;
        anyhow::Ok((r.status(), r.text().await?))
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(true)?;
    let stop_sent = std::time::Instant::now();
    for (i, connection) in held.iter_mut().enumerate() {
        // Draining starts within moments; lanes drained one after another would keep lane 1
        // serving until the slow request on lane 0 is done.
        loop {
            let late = connection.get("/where").await;
            if late.is_err() {
                break;
            }
            assert!(
                stop_sent.elapsed() < Duration::from_secs(1),
                "connection {i} (lane {}) still served after the stop: {late:?}",
                i % 2
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (status, body) = in_flight.await??;
    assert_eq!((status.as_u16(), body.as_str()), (200, "done"));
    let _parked = tokio::time::timeout(Duration::from_secs(5), serving).await???;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after serve returns"
    );
    Ok(())
}
