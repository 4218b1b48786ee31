//! The pool over real sockets when servers fail to answer: nothing listening, a silent server
//! among healthy ones, and the pool dropped mid-run.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::wire::http;
use comfy_proxy::{ServerAddress, Workflow};
use comfy_proxy_driver::client::{Client, ClientConfig};
use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::pool::{JobError, Pool, PoolConfig, PoolEvent};
use comfy_proxy_driver::{HttpClient, Runtime};
use comfy_proxy_smol::Smol;
use comfy_proxy_testkit::suite::{Kit, fast, sampler, start_mock};
use smol::stream::StreamExt;

#[path = "common/bounded.rs"]
mod bounded;
use bounded::bounded;

fn kit() -> Kit {
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    let http: Arc<dyn HttpClient> = Arc::new(Http1::new(rt.clone()));
    Kit { rt, http }
}

fn graph() -> Workflow {
    Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":1,"color":0}},
            "save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}}}"#,
    )
    .unwrap()
}

fn object_info() -> serde_json::Value {
    let path = format!(
        "{}/../../fixtures/object_info.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn nothing_listening_fails_naming_the_address() {
    let kit = kit();
    // A port nothing listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = ServerAddress::parse(&format!("127.0.0.1:{port}")).unwrap();
    let mut config = PoolConfig::new(
        &[server],
        &ClientConfig::new(ServerAddress::parse("127.0.0.1:1").unwrap()),
    );
    config.route_by_capability = true;
    smol::block_on(bounded("a refused address", async {
        let (pool, mut events) = Pool::start(kit.rt.clone(), kit.http.clone(), config);
        let job = pool.submit(graph()).await.unwrap().id();
        pool.close();
        let mut reports = Vec::new();
        while let Some(event) = events.next().await {
            if let PoolEvent::Finished(r) = event {
                reports.push(r);
            }
        }
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].job, job);
        let error = reports[0].outcome.as_ref().unwrap_err();
        assert!(
            matches!(error, JobError::NoServerReachable { servers } if servers.len() == 1),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("refused"), "{text}");
        assert!(std::error::Error::source(error).is_some());
    }));
}

#[test]
fn a_silent_server_among_three_healthy_ones_holds_nothing_back() {
    let kit = kit();
    // Accepts connections and never reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
            if held.len() > 256 {
                break;
            }
        }
    });
    smol::block_on(bounded("100 jobs beside a silent server", async {
        let info = object_info();
        let mut mocks = Vec::new();
        for _ in 0..3 {
            let mut c = fast();
            c.object_info = Some(info.clone());
            mocks.push(start_mock(&kit, c).await);
        }
        let mut servers = vec![ServerAddress::parse(&silent_addr.to_string()).unwrap()];
        servers.extend(
            mocks
                .iter()
                .map(|m| ServerAddress::parse(&m.address()).unwrap()),
        );
        let mut config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
        config.route_by_capability = true;
        let (pool, mut events) = Pool::start(kit.rt.clone(), kit.http.clone(), config);
        for _ in 0..100 {
            drop(pool.submit(graph()).await.unwrap());
        }
        pool.close();
        let (mut ok, mut failed) = (0, Vec::new());
        while let Some(event) = events.next().await {
            if let PoolEvent::Finished(r) = event {
                match &r.outcome {
                    Ok(()) => {
                        assert_ne!(r.server, Some(0), "nothing runs on the silent server");
                        assert_eq!(r.outputs.len(), 1);
                        ok += 1;
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
        }
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(ok, 100);
    }));
}

#[test]
fn dropping_the_pool_cancels_its_prompts_on_the_servers() {
    dropped_mid_run(false);
}

#[test]
fn dropping_the_events_receiver_cancels_its_prompts_on_the_servers() {
    dropped_mid_run(true);
}

/// Runs long jobs on two mocks, drops the pool (or, with `receiver`, only its events) once
/// each server holds two of them, and waits until both servers' queues are empty.
fn dropped_mid_run(receiver: bool) {
    let kit = kit();
    smol::block_on(bounded("a dropped pool", async {
        let mut mocks = Vec::new();
        for _ in 0..2 {
            let mut c = fast();
            // Long jobs (100 steps of 1 s, an interrupt boundary each): without a cancel they
            // would sit on the servers for minutes.
            c.step = Duration::from_secs(1);
            mocks.push(start_mock(&kit, c).await);
        }
        let servers: Vec<ServerAddress> = mocks
            .iter()
            .map(|m| ServerAddress::parse(&m.address()).unwrap())
            .collect();
        let config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
        let (pool, mut events) = Pool::start(kit.rt.clone(), kit.http.clone(), config);
        for _ in 0..6 {
            drop(pool.submit(sampler(100, 5)).await.unwrap());
        }
        // Wait until every server has accepted both its prompts.
        let mut accepted = 0;
        while accepted < 4 {
            match events.next().await {
                Some(PoolEvent::Accepted { .. }) => accepted += 1,
                Some(_) => {}
                None => panic!("the pool ended early"),
            }
        }
        let probes: Vec<Client> = servers
            .iter()
            .map(|s| {
                Client::connect(
                    kit.rt.clone(),
                    kit.http.clone(),
                    ClientConfig::new(s.clone()),
                )
            })
            .collect();
        for probe in &probes {
            let queue = http::decode_queue(&probe.request(http::queue()).await.unwrap()).unwrap();
            assert_eq!(
                queue.len(),
                2,
                "each server holds two of the pool's prompts"
            );
        }
        // The servers' queues empty: every prompt was deleted or interrupted (jobs of 100 s
        // would otherwise be there for minutes).
        if receiver {
            drop(events);
        } else {
            drop(pool);
            while events.next().await.is_some() {}
        }
        for probe in &probes {
            loop {
                let resp = probe.request(http::queue()).await.unwrap();
                if http::decode_queue(&resp).unwrap().is_empty() {
                    break;
                }
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            // The mock counted the cancels: its running prompt interrupted, its waiting one
            // deleted (or interrupted once it started).
            let mut counters = http::queue();
            counters.path = "/mock/faults".to_owned();
            let resp = probe.request(counters).await.unwrap();
            let seen: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            let cancels = seen["interrupts"].as_u64().unwrap() + seen["deletes"].as_u64().unwrap();
            assert!(cancels >= 2, "{seen}");
            assert!(seen["interrupts"].as_u64().unwrap() >= 1, "{seen}");
        }
    }));
}
