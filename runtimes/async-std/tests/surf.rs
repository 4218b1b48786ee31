//! A program's own configured `surf::Client` as the transport (the `surf` feature): its
//! middleware sees every request comfy-proxy makes. The surf client's backend here is a test
//! one over comfy-proxy's own HTTP/1.1 client, since surf's stock backends bring in tokio or
//! libcurl.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use comfy_proxy::session::Deadlines;
use comfy_proxy::wire::http::{Body, system_stats};
use comfy_proxy::wire::{HttpRequest, Method};
use comfy_proxy::{ServerAddress, TransportErrorKind, Workflow};
use comfy_proxy_async_std::{AsyncStd, ClientConfig, Http1, connect_with_surf};
use comfy_proxy_driver::{HttpClient, OutgoingRequest, TlsConfig};
use comfy_proxy_mock as mock;
use comfy_proxy_mock::MockConfig;

/// surf's backend for the test: comfy-proxy's HTTP/1.1 client.
#[derive(Debug)]
struct OurHttp(Http1, http_client::Config);

#[async_trait::async_trait]
impl http_client::HttpClient for OurHttp {
    async fn send(
        &self,
        mut req: http_client::Request,
    ) -> Result<http_client::Response, http_client::Error> {
        let url = req.url().clone();
        let authority = format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port().unwrap_or(80)
        );
        let server =
            ServerAddress::parse(&authority).map_err(|e| http_client::Error::new(400, e))?;
        let mut headers = comfy_proxy_driver::Headers::new();
        let mut content_type = None;
        for (name, values) in req.iter() {
            for value in values.iter() {
                match name.as_str() {
                    "content-type" => content_type = Some(value.as_str().to_owned()),
                    "content-length" => {}
                    other => headers
                        .push(other, value.as_str())
                        .map_err(|e| http_client::Error::new(400, e))?,
                }
            }
        }
        let method = if req.method() == surf::http::Method::Post {
            Method::Post
        } else {
            Method::Get
        };
        let bytes = req.body_bytes().await?;
        let body = content_type.map(|content_type| Body {
            content_type,
            bytes,
        });
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let outgoing = OutgoingRequest {
            server,
            url: url.to_string(),
            shown_url: url.to_string(),
            target: target.clone(),
            request: HttpRequest {
                method,
                path: target,
                body,
            },
            headers,
            tls: TlsConfig::default(),
            max_body: 64 << 20,
            timeout: Duration::from_secs(30),
        };
        let response = self
            .0
            .send(outgoing)
            .await
            .map_err(|e| http_client::Error::new(502, e))?;
        let mut out = http_client::Response::new(response.status);
        out.set_body(response.body.to_vec());
        Ok(out)
    }

    fn set_config(&mut self, config: http_client::Config) -> Result<(), http_client::Error> {
        self.1 = config;
        Ok(())
    }

    fn config(&self) -> &http_client::Config {
        &self.1
    }
}

/// The program's own middleware: counts the requests and stamps a header on each.
#[derive(Debug, Clone, Default)]
struct Counter(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl surf::middleware::Middleware for Counter {
    async fn handle(
        &self,
        mut req: surf::Request,
        client: surf::Client,
        next: surf::middleware::Next<'_>,
    ) -> surf::Result<surf::Response> {
        self.0.fetch_add(1, Ordering::Relaxed);
        req.insert_header("x-program", "mine");
        next.run(req, client).await
    }
}

fn surf_client(counter: &Counter) -> surf::Client {
    let backend = OurHttp(
        Http1::new(Arc::new(AsyncStd)),
        http_client::Config::default(),
    );
    surf::Client::with_http_client(backend).with(counter.clone())
}

fn graph() -> Workflow {
    // SaveImage: the image comes back through `/view`, so over surf too.
    Workflow::from_json(
        r#"{"1":{"class_type":"EmptyLatentImage","inputs":{"width":32,"height":32,"batch_size":1}},
            "2":{"class_type":"KSampler","inputs":{"seed":1,"steps":2,"cfg":1.0,"sampler_name":"euler","scheduler":"normal","denoise":1.0,"latent_image":["1",0]}},
            "3":{"class_type":"VAEDecode","inputs":{"samples":["2",0]}},
            "save":{"class_type":"SaveImage","inputs":{"images":["3",0],"filename_prefix":"t"}}}"#,
    )
    .expect("test graph")
}

#[test]
fn a_job_runs_over_the_program_s_surf_client() {
    async_std::task::block_on(async {
        let mut fast = MockConfig::default();
        fast.step = Duration::from_millis(2);
        fast.job = Duration::from_millis(5);
        let server = mock::serve(
            Arc::new(AsyncStd),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            fast,
        )
        .await
        .expect("bind a loopback port");
        let counter = Counter::default();
        let address = ServerAddress::from_str(&server.address()).unwrap();
        let config = ClientConfig::new(address)
            .with_deadlines(Deadlines::none().total(Duration::from_secs(30)));
        let client = connect_with_surf(surf_client(&counter), config.clone());
        let result = client.run(graph()).await.expect("the job runs");
        assert_eq!(result.outputs.len(), 1);
        assert_eq!(result.outputs[0].extension, "png");
        let seen = counter.0.load(Ordering::Relaxed);
        assert!(
            seen >= 2,
            "POST /prompt and GET /view went through surf: {seen}"
        );

        // A client with headers of its own: they pass through surf's request and the program's
        // middleware sees the request.
        let with_header = config.with_header("x-trace", "t1").unwrap();
        let traced = connect_with_surf(surf_client(&counter), with_header);
        let before = counter.0.load(Ordering::Relaxed);
        let stats = traced.request(system_stats()).await.expect("system_stats");
        assert_eq!(stats.status, 200);
        assert_eq!(counter.0.load(Ordering::Relaxed), before + 1);
    });
}

#[test]
fn surf_errors_are_typed() {
    async_std::task::block_on(async {
        let counter = Counter::default();
        let surf = comfy_proxy_async_std::SurfClient::new(surf_client(&counter));
        let nobody = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let config = ClientConfig::new(ServerAddress::from_str(&nobody).unwrap());
        let o = comfy_proxy_driver::client::outgoing(&config, system_stats());
        let e = surf.send(o).await.unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::Refused, "{e}");
        assert!(e.what.starts_with("GET http://127.0.0.1:"), "{e}");
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
    });
}
