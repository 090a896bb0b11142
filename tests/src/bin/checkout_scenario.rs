//! The checkout scenario of `tests/tests/k8s_checkout.rs` (the same code,
//! `weft_tests::checkout`) against the cluster of the current kubeconfig, where
//! Weft was installed with `kubectl apply -k deploy/k8s` and nothing else: how
//! `tests/kind/run.sh` checks a kind cluster.
//!
//!   checkout-scenario [--prometheus NAMESPACE/SERVICE:PORT] [--no-churn]
//!
//! Steps: weft-control's bootstrap (the CA and webhook certificate it made, the
//! caBundle, the development CA warning); `kubectl apply -k
//! deploy/k8s/examples/checkout`, every pod Ready and injected; a load generator
//! pod's requests through web all succeed; every service's sidecars served and
//! orders' and users' took web's requests over mTLS; with `--prometheus`, that
//! Prometheus scrapes every sidecar and has mTLS request counts; unless
//! `--no-churn`, orders scaled 1 -> 3 -> 1 and restarted under load loses no
//! request. Exits 0 when every step passed.

use std::time::Duration;

use anyhow::{Context as _, bail};
use weft_tests::checkout::{Checkout, NAMESPACE, poll, prometheus_query};

/// How long Prometheus may take to find and scrape every sidecar.
const SCRAPE_LIMIT: Duration = Duration::from_secs(120);
const CHURN_LOAD_SECONDS: u32 = 60;

struct Args {
    prometheus: Option<String>,
    churn: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        prometheus: None,
        churn: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prometheus" => {
                out.prometheus = Some(it.next().context("--prometheus needs a value")?)
            }
            "--no-churn" => out.churn = false,
            other => bail!(
                "unknown argument {other}\nusage: checkout-scenario [--prometheus NAMESPACE/SERVICE:PORT] [--no-churn]"
            ),
        }
    }
    Ok(out)
}

fn step(what: &str) {
    println!("\n== {what}");
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no cluster in the current kubeconfig")?;
    let checkout = Checkout::new(client.clone(), None);

    step("weft-control's bootstrap");
    checkout.check_bootstrap().await?;

    step("checkout example: kubectl apply -k deploy/k8s/examples/checkout");
    let pods = checkout.install_example().await?;
    let count: usize = pods.values().map(Vec::len).sum();
    println!("{count} pods Ready and injected: {pods:?}");

    step("traffic: a load generator pod calls web");
    let load = checkout.run_loadgen("loadgen", 20, 5).await?;
    println!("loadgen {load}");
    if !load.all_ok(50) {
        bail!("requests failed: {load}");
    }
    checkout.check_traffic(&pods).await?;

    if let Some(service) = &args.prometheus {
        step("prometheus scrapes every sidecar");
        let up = format!("count(up{{job=\"weft-proxies\",namespace=\"{NAMESPACE}\"}} == 1)");
        poll(SCRAPE_LIMIT, "Prometheus scrapes every sidecar", || async {
            let v = prometheus_query(&client, service, &up).await.ok()?;
            let n = v.first().copied().unwrap_or(0.0);
            println!("  sidecars up in Prometheus: {n}/{count}");
            (n >= count as f64).then_some(())
        })
        .await?;
        let mtls = "sum(weft_inbound_requests_by_peer_total{tls=\"true\"})";
        let v = prometheus_query(&client, service, mtls).await?;
        println!("  {mtls} = {v:?}");
        if v.first().is_none_or(|n| *n <= 0.0) {
            bail!("Prometheus has no mTLS request counts");
        }
    }

    if args.churn {
        step("orders scaled 1 -> 3 -> 1 and restarted under load");
        let load = checkout.churn_orders_under_load(CHURN_LOAD_SECONDS).await?;
        println!("loadgen {load}");
        if !load.all_ok(1) {
            bail!("requests lost while orders scaled and restarted: {load}");
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let result = match args() {
        Ok(a) => run(a).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            println!("\nPASS");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAIL: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
