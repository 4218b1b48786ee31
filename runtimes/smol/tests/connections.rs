//! HTTP connections are kept alive and reused: a hundred jobs on one mock server over loopback
//! open a handful of TCP connections, not one per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::session::Deadlines;
use comfy_proxy::{ServerAddress, Workflow};
use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::pool::{Pool, PoolConfig, PoolEvent};
use comfy_proxy_driver::{ClientConfig, Runtime};
use comfy_proxy_mock as mock;
use comfy_proxy_mock::MockConfig;
use comfy_proxy_smol::Smol;
use smol::stream::StreamExt;

/// A graph whose image comes back as a file (`SaveImage`, fetched with `/view`) or over the
/// websocket (`SaveImageWebsocket`), so both kinds of exchange run.
fn graph(seed: u64, file: bool) -> Workflow {
    let save = if file {
        "SaveImage"
    } else {
        "SaveImageWebsocket"
    };
    let prefix = if file {
        r#","filename_prefix":"t""#
    } else {
        ""
    };
    Workflow::from_json(&format!(
        r#"{{"1":{{"class_type":"EmptyLatentImage","inputs":{{"width":32,"height":32,"batch_size":1}}}},
            "2":{{"class_type":"KSampler","inputs":{{"seed":{seed},"steps":1,"cfg":1.0,"sampler_name":"euler","scheduler":"normal","denoise":1.0,"latent_image":["1",0]}}}},
            "3":{{"class_type":"VAEDecode","inputs":{{"samples":["2",0]}}}},
            "save":{{"class_type":"{save}","inputs":{{"images":["3",0]{prefix}}}}}}}"#
    ))
    .expect("test graph")
}

#[test]
fn a_hundred_jobs_on_one_server_reuse_a_dozen_connections() {
    smol::block_on(async {
        let rt: Arc<dyn Runtime> = Arc::new(Smol);
        let mut fast = MockConfig::default();
        fast.step = Duration::from_millis(1);
        fast.job = Duration::from_millis(2);
        let server = mock::serve(rt.clone(), SocketAddr::from(([127, 0, 0, 1], 0)), fast)
            .await
            .expect("bind a loopback port");
        let address = ServerAddress::parse(&server.address()).unwrap();
        let template = ClientConfig::new(address.clone())
            .with_deadlines(Deadlines::none().total(Duration::from_secs(60)));
        let config = PoolConfig::new(&[address], &template);
        let (pool, mut events) = Pool::start(rt.clone(), Arc::new(Http1::new(rt.clone())), config);
        let jobs = 100;
        for i in 0..jobs {
            drop(pool.submit(graph(i, i % 2 == 0)).await.unwrap());
        }
        pool.close();
        let mut ok = 0;
        while let Some(event) = events.next().await {
            if let PoolEvent::Finished(report) = event {
                assert!(report.outcome.is_ok(), "{:?}", report.outcome);
                assert_eq!(report.outputs.len(), 1, "one image per job");
                ok += 1;
            }
        }
        assert_eq!(ok, jobs, "every job succeeded");
        let opened = server.accepted_connections();
        eprintln!("{jobs} jobs opened {opened} TCP connections");
        assert!(
            opened >= 2,
            "the websocket and at least one HTTP connection: {opened}"
        );
        assert!(opened <= 12, "{jobs} jobs opened {opened} TCP connections");
    });
}

/// A one-connection-at-a-time server on loopback that reads a request head and answers each
/// connection with the next script; returns its address.
fn scripted_server(scripts: Vec<Script>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for script in scripts {
            let Ok((mut tcp, _)) = listener.accept() else {
                return;
            };
            script.serve(&mut tcp);
        }
    });
    address
}

/// What a scripted server does with one connection.
enum Script {
    /// Answers each of `n` requests with `reply`, then closes.
    Answer(&'static [u8], usize),
    /// Reads the request and never answers; holds the connection until the client leaves.
    Silent,
}

impl Script {
    fn serve(self, tcp: &mut std::net::TcpStream) {
        use std::io::{Read, Write};
        let read_head = |tcp: &mut std::net::TcpStream| {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match tcp.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return false,
                }
            }
            true
        };
        match self {
            Script::Answer(reply, n) => {
                for _ in 0..n {
                    if !read_head(tcp) || tcp.write_all(reply).is_err() {
                        return;
                    }
                }
            }
            Script::Silent => {
                read_head(tcp);
                let mut sink = [0u8; 64];
                while matches!(tcp.read(&mut sink), Ok(n) if n > 0) {}
            }
        }
    }
}

fn send(
    http: &Http1,
    address: &str,
    request: comfy_proxy::wire::HttpRequest,
    max_body: usize,
    timeout: Duration,
) -> Result<comfy_proxy::wire::HttpResponse, comfy_proxy::TransportError> {
    use comfy_proxy_driver::HttpClient;
    let config = ClientConfig::new(ServerAddress::parse(address).unwrap());
    let mut o = comfy_proxy_driver::client::outgoing(&config, request);
    o.max_body = max_body;
    o.timeout = timeout;
    smol::block_on(http.send(o))
}

#[test]
fn failed_responses_are_typed() {
    use comfy_proxy::TransportErrorKind as K;
    use comfy_proxy::wire::http::system_stats;
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    let http = Http1::new(rt);
    let second = Duration::from_secs(10);

    let big = scripted_server(vec![Script::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        1,
    )]);
    let e = send(&http, &big, system_stats(), 999, second).unwrap_err();
    assert_eq!(e.kind, K::TooLarge { limit: 999 }, "{e}");
    assert!(
        e.what.starts_with("GET http://127.0.0.1:"),
        "names the request: {e}"
    );

    let cut = scripted_server(vec![Script::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this much",
        1,
    )]);
    let e = send(&http, &cut, system_stats(), 1 << 20, second).unwrap_err();
    assert_eq!(e.kind, K::Reset, "{e}");

    let silent = scripted_server(vec![Script::Silent]);
    let limit = Duration::from_millis(300);
    let e = send(&http, &silent, system_stats(), 1 << 20, limit).unwrap_err();
    assert_eq!(e.kind, K::TimedOut(limit), "{e}");

    let nobody = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = send(&http, &nobody, system_stats(), 1 << 20, second).unwrap_err();
    assert_eq!(e.kind, K::Refused, "{e}");
}

#[test]
fn a_get_on_a_connection_the_server_closed_is_sent_again_a_post_is_not() {
    use comfy_proxy::TransportErrorKind as K;
    use comfy_proxy::wire::http::{interrupt, system_stats};
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    let http = Http1::new(rt);
    let second = Duration::from_secs(10);
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    // Each connection answers one request and then closes, keep-alive notwithstanding.
    let server = scripted_server(vec![
        Script::Answer(ok, 1),
        Script::Answer(ok, 1),
        Script::Answer(ok, 1),
    ]);
    let first = send(&http, &server, system_stats(), 100, second).unwrap();
    assert_eq!(first.status, 200);
    // The kept connection is dead: the GET goes again on a fresh one (the second script).
    let again = send(&http, &server, system_stats(), 100, second).unwrap();
    assert_eq!(again.status, 200);
    // Same for a POST, but it may have been acted on: it fails instead of going twice.
    let e = send(&http, &server, interrupt(None), 100, second).unwrap_err();
    assert_eq!(e.kind, K::Reset, "{e}");
    // The next request opens the third connection.
    let after = send(&http, &server, interrupt(None), 100, second).unwrap();
    assert_eq!(after.status, 200);
}
