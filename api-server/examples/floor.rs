//! The floor under the api-server benchmark: the least any axum server can spend per request
//! on this machine, measured in the same run as the api-server and nginx (api-server/tests/bench.rs).
//!
//!     floor <port> [<redis-url>]
//!
//! `GET /hello` answers a static 200 (axum + hyper and nothing else). `GET /script` first runs
//! one Redis script (TIME, GET, SET: the shape of a GCRA decision), a call of its own per
//! request. Served like the api-server's public port: lanes (`api_server::lanes`), each with
//! its own multiplexed Redis connection. No authentication, logging, metrics or middleware.
//! The api-server batches the admissions a lane starts together into one script call
//! (`api_server::ratelimit`), so its Redis cost per request can be below this one's.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SCRIPT: &str = r#"
local now = redis.call('TIME')
local tat = tonumber(redis.call('GET', KEYS[1]) or now[1])
redis.call('SET', KEYS[1], math.max(tat, now[1]) + 1, 'EX', 60)
return 1
"#;

#[derive(Clone)]
struct Redis {
    client: redis::Client,
    script: redis::Script,
}

thread_local! {
    // Each lane's own connection, opened by its first request (as the api-server's are).
    static CONNECTION: std::cell::OnceCell<redis::aio::MultiplexedConnection> =
        const { std::cell::OnceCell::new() };
}

async fn connection(
    client: &redis::Client,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    if let Some(c) = CONNECTION.with(|c| c.get().cloned()) {
        return Ok(c);
    }
    let c = client.get_multiplexed_async_connection().await?;
    CONNECTION.with(|cell| {
        let _ = cell.set(c.clone());
    });
    Ok(c)
}

async fn script(State(redis): State<Option<Redis>>) -> (StatusCode, &'static str) {
    let Some(redis) = redis else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no redis\n");
    };
    let Ok(mut connection) = connection(&redis.client).await else {
        return (StatusCode::BAD_GATEWAY, "redis\n");
    };
    let result: redis::RedisResult<i64> = redis
        .script
        .key("floor:bench")
        .invoke_async(&mut connection)
        .await;
    match result {
        Ok(_) => (StatusCode::OK, "ok\n"),
        Err(_) => (StatusCode::BAD_GATEWAY, "redis\n"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: floor <port> [<redis-url>]"))?
        .parse()?;
    let redis = match args.next() {
        Some(url) => Some(Redis {
            client: redis::Client::open(url)?,
            script: redis::Script::new(SCRIPT),
        }),
        None => None,
    };
    let app = Router::new()
        .route("/hello", get(|| async { "ok\n" }))
        .route("/script", get(script))
        .with_state(redis);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // Served as the api-server serves its public port, on one lane per CPU; never stopped.
    let (_stop, never) = tokio::sync::watch::channel(false);
    let lanes = api_server::lanes::count(0);
    api_server::lanes::serve(
        listener,
        move || app.clone(),
        lanes,
        std::time::Duration::from_millis(500),
        never,
    )
    .await?;
    Ok(())
}
