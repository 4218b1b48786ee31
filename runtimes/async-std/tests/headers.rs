//! Checked headers through surf: the auth's and the user's headers and the query token reach
//! the server as configured, and the secret-bearing URL never shows in an error.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use comfy_proxy::ServerAddress;
use comfy_proxy_async_std::{Auth, ClientConfig, connect};

/// Answers requests with `200 {}` until one for `/system_stats` came, and returns its head.
/// Other connections (the client's websocket, which may open first) are answered the same way
/// and closed.
fn one_request(listener: TcpListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        for _ in 0..8 {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
            if head.starts_with("GET /system_stats") {
                return head;
            }
        }
        panic!("no request for /system_stats in 8 connections");
    })
}

#[test]
fn headers_and_query_token_reach_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server_thread = one_request(listener);
    let server = ServerAddress::parse(&format!("127.0.0.1:{port}")).unwrap();
    let config = ClientConfig::new(server)
        .with_auth(Auth::Query {
            name: "token".into(),
            value: "q-s3cret".into(),
        })
        .unwrap()
        .with_header("X-Api-Key", "k-s3cret")
        .unwrap()
        .with_header("X-Trace", "t1")
        .unwrap();
    let response = async_std::task::block_on(async {
        connect(config)
            .request(comfy_proxy::wire::http::system_stats())
            .await
    })
    .unwrap();
    assert_eq!(response.status, 200);
    let head = server_thread.join().unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("get /system_stats?token=q-s3cret "),
        "{head}"
    );
    assert_eq!(head.matches("x-api-key: k-s3cret\r\n").count(), 1, "{head}");
    assert!(head.contains("x-trace: t1\r\n"), "{head}");
    // The driver's own headers only: nothing surf-internal leaks to the server.
    assert!(!head.contains("x-comfy-proxy"), "{head}");
}

#[test]
fn a_refused_request_names_the_url_without_its_token() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = ServerAddress::parse(&format!("127.0.0.1:{port}")).unwrap();
    let config = ClientConfig::new(server)
        .with_auth(Auth::Query {
            name: "token".into(),
            value: "q-s3cret".into(),
        })
        .unwrap();
    let error = async_std::task::block_on(async {
        connect(config)
            .request(comfy_proxy::wire::http::system_stats())
            .await
    })
    .unwrap_err()
    .to_string();
    assert!(!error.contains("q-s3cret"), "{error}");
    assert!(error.contains("token=<redacted>"), "{error}");
}
