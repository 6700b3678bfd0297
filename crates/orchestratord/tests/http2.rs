//! HTTP/2 without TLS (h2c, prior knowledge) on the same port as HTTP/1.1: a gateway holding
//! many streams multiplexes them over a few connections (about 2.5 KiB per idle stream,
//! against hyper's 16 KiB floor per HTTP/1.1 connection: `llorch-soak idle --http2`).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_submit_and_stream_over_h2c_beside_http1() {
    let s = Server::start(&mock_config(
        4,
        "capacity = 64",
        "tokens_per_second = 500",
        "",
    ));
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // Several streams at once over the one HTTP/2 connection this client keeps.
    let mut streams = Vec::new();
    for i in 0..8 {
        let r = h2
            .post(s.url("/v1/tasks"))
            .bearer_auth(DATA_KEY)
            .json(&task(&format!("h2-{i}"), 6))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 202);
        streams.push(
            h2.get(s.url(&format!("/v1/tasks/h2-{i}/stream")))
                .bearer_auth(DATA_KEY)
                .send(),
        );
    }
    for r in futures::future::join_all(streams).await {
        let r = r.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        let evs = read_events(r).await;
        assert_eq!(evs.iter().filter(|(n, _)| n == "token").count(), 6);
        assert_eq!(evs.last().unwrap().0, "end");
    }
    // HTTP/1.1 on the same port still works.
    let r = s.submit(DATA_KEY, task("h1", 3)).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 202);
}
