//! The Prometheus harness (tests/common/prometheus.rs): targets scraped with the labels a pod's
//! would give, and the data kept across an outage.

use std::net::SocketAddr;
use std::time::Duration;

use crate::backend::free_port;
use crate::common;
use crate::common::prometheus::{self, JOB, Prometheus, ScrapeTarget};

pub async fn prometheus_scrapes_labelled_targets_and_comes_back_after_an_outage() {
    const TEST: &str = "prometheus_scrapes_labelled_targets_and_comes_back_after_an_outage";
    let Some(binary) = prometheus::binary(TEST) else {
        return;
    };
    // Prometheus scrapes its own /metrics here: the only target at hand that serves the
    // exposition format (the chat backend's /metrics is still to come).
    let port = free_port();
    let own = SocketAddr::from(([127, 0, 0, 1], port));
    let target = ScrapeTarget::new(own, &[("namespace", "x"), ("version", "v1")]);
    let mut prom = Prometheus::start_on(&binary, port, &[target]).await;
    let up = format!(r#"up{{job="{JOB}",namespace="x",version="v1"}}"#);
    assert_eq!(
        prom.wait_for_samples(&up, Duration::from_secs(30)).await,
        1.0
    );
    // The labels select and group like pod labels would: one series per version, none elsewhere.
    let by_version = r#"sum by (version) (prometheus_http_requests_total{namespace="x"})"#;
    let series = prom.query_vector(by_version).await.expect("a vector");
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(
        series[0].0,
        vec![("version".to_owned(), "v1".to_owned())],
        "{series:?}"
    );
    assert!(series[0].1 >= 1.0, "{series:?}");
    assert_eq!(prom.query(r#"up{namespace="y"}"#).await, None);

    // Enough scrapes that the outage cannot be mistaken for a start.
    let scraped = format!("count_over_time({up}[10m])");
    let before = common::wait_for("3 scrapes", Duration::from_secs(30), async || {
        prom.query(&scraped).await.filter(|n| *n >= 3.0)
    })
    .await;

    prom.kill();
    assert!(!prom.ready().await);
    assert_eq!(prom.query(&up).await, None);
    assert_eq!(prom.query_vector("vector(1)").await, None);

    prom.start_again().await;
    assert!(prom.ready().await);
    assert_eq!(
        prom.wait_for_samples(&up, Duration::from_secs(30)).await,
        1.0
    );
    // Same data dir: the scrapes from before the outage are still there.
    let after = prom
        .query(&scraped)
        .await
        .expect("scrapes after the restart");
    assert!(
        after >= before,
        "{after} scrapes after the restart, {before} before"
    );
}
