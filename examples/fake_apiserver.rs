//! The tests' fake Kubernetes API server as a process, so black-box tests can drive a real
//! `pilotfish serve --kubeconfig` with a real `kubectl` (conformance/test_kubernetes.py).
//!
//! ```sh
//! cargo run --example fake_apiserver -- --kubeconfig /tmp/kc &
//! kubectl --kubeconfig /tmp/kc apply -f crds/     # or start with --install-istio-crds
//! pilotfish serve --kubeconfig /tmp/kc --http-address 127.0.0.1:8080
//! ```
//!
//! Prints the main endpoint's URL on stdout and serves until SIGTERM or SIGINT. The objects
//! live in memory, so an outage is a signal rather than a restart: SIGUSR1 cuts the main
//! endpoint off — its requests hang and its watches drop — and SIGUSR2 ends that.
//! `--second-kubeconfig` adds an endpoint outages never touch, for a kubectl that changes the
//! cluster meanwhile.

#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fake_apiserver::FakeApiServer;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "An in-process fake Kubernetes API server, for tests")]
struct Args {
    /// Port of the main endpoint on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write a kubeconfig for the main endpoint here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Also serve a second endpoint, which outages never touch, and write its kubeconfig here.
    #[arg(long)]
    second_kubeconfig: Option<PathBuf>,
    /// Create pilotfish's Istio CRDs (`pilotfish crds`) before serving.
    #[arg(long)]
    install_istio_crds: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake_apiserver: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let server = FakeApiServer::start_on(args.port)
        .await
        .map_err(|e| format!("binding 127.0.0.1:{}: {e}", args.port))?;
    if args.install_istio_crds {
        let crds =
            pilotfish::crd::generate().map_err(|e| format!("generating the Istio CRDs: {e}"))?;
        for crd in crds {
            server
                .apply(crd.definition)
                .map_err(|e| format!("installing the {} CRD: {e}", crd.kind.name()))?;
        }
    }
    if let Some(path) = &args.kubeconfig {
        server
            .write_kubeconfig(path)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    // Kept alive (and serving) until the process ends.
    let mut second = None;
    if let Some(path) = &args.second_kubeconfig {
        let endpoint = second.insert(server.endpoint().await);
        endpoint
            .write_kubeconfig(path)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", server.url())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing the URL: {e}"))?;

    let mut signals = Signals::new().map_err(|e| format!("installing signal handlers: {e}"))?;
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => break,
            _ = signals.interrupt.recv() => break,
            // Logged once done: the harness waits for these lines.
            _ = signals.outage.recv() => {
                server.main_endpoint().pause();
                server.drop_watches();
                eprintln!("fake_apiserver: outage: {} hangs, its watches dropped", server.url());
            }
            _ = signals.recover.recv() => {
                server.main_endpoint().resume();
                eprintln!("fake_apiserver: outage over: {} answers again", server.url());
            }
        }
    }
    drop(second);
    Ok(())
}

struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    outage: tokio::signal::unix::Signal,
    recover: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            outage: signal(SignalKind::user_defined1())?,
            recover: signal(SignalKind::user_defined2())?,
        })
    }
}
